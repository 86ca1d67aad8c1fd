"""The server around the engine: gunicorn hooks' helpers (listeners, the worker board, system
information), the WSGI app it builds (`bootstrap`), and its HTTP layer (`http/`, falcon)."""
