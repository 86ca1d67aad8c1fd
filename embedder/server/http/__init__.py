"""The thin web layer: falcon resources over `embedder.service.Service`."""
