"""The app's router: falcon's, with HEAD answered wherever GET is."""

from __future__ import annotations

from typing import Any

import falcon


class HeadRouter(falcon.routing.CompiledRouter):
    """HEAD is answered as GET wherever a resource has no HEAD of its own (RFC 9110 section
    9.3.2: a server that answers GET should answer HEAD): falcon sends the headers of the GET
    answer, its Content-Length included, and no body."""

    def map_http_methods(self, resource: object, **kwargs: Any) -> Any:
        methods: dict[str, Any] = super().map_http_methods(resource, **kwargs)
        if "GET" in methods and "HEAD" not in methods:
            methods["HEAD"] = methods["GET"]
        return methods
