"""The WSGI entry gunicorn loads in each worker, after fork (never preload: ONNX Runtime
sessions made before fork lose their thread pool): `embedder.server.wsgi:app`."""

import os

from embedder.server.bootstrap import build_app

# The worker's parent is the gunicorn master: mem_info reads the whole tree from it.
app = build_app(master_pid=os.getppid())
