"""The numba backend (``numba.backend``) with its FTWT gate kernels (``numba.gates``)."""
from spike.backends.numba import backend, gates  # registers the backend and all its kernels

__all__ = ["backend", "gates"]
