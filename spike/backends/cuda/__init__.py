"""The cuda backend (``cuda.backend``) with its FTWT gate kernels (``cuda.gates``); ``numba.cuda``
is imported when a kernel first runs."""
from spike.backends.cuda import backend, gates  # registers the backend and all its kernels

__all__ = ["backend", "gates"]
