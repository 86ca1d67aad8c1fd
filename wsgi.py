"""The WSGI entry of a checkout (`gunicorn wsgi:app`); the app is the installed package's,
`embedder.server.wsgi:app`, which the project's gunicorn config loads itself."""

from embedder.server.wsgi import app

__all__ = ["app"]
