"""hero_embedder_provider: CPU text embeddings and reranking on ONNX Runtime.

The package is the engine and knows nothing of HTTP; `embedder.server.http` is the thin web layer.
"""

__version__ = "0.1.0"
