"""gunicorn settings for a checkout: `gunicorn -c gunicorn.conf.py`.

The settings and hooks live in the package, `embedder.server.gunicorn_config`, so that an
installed copy serves without this file (`embedder serve`, or
`gunicorn -c python:embedder.server.gunicorn_config`); this file only takes them from there.
"""

from embedder.server.gunicorn_config import *  # noqa: F403
