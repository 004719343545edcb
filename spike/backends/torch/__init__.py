"""The torch backend (``torch.backend``) with its FTWT gate kernels (``torch.gates``)."""
from spike.backends.torch import backend, gates  # registers the backend and all its kernels

__all__ = ["backend", "gates"]
