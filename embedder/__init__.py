"""hero_embedder_provider: CPU text embeddings and reranking on ONNX Runtime.

The modules here are the engine, which knows nothing of HTTP. Around it: `store` (model
files and downloads), `prepare` (graphs and INT8 levels built here), `server` (gunicorn's
side and `server.http`, the thin falcon layer), `client`, `cli` and `tools`.
"""

__version__ = "0.1.0"
