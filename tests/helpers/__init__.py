"""Builders shared by the test suites (``tests/conftest.py`` puts ``tests/`` on the import path):
``models`` (torch and snnTorch models, dyadic weights, spike inputs), ``programs`` (IR programs
built node by node), ``lava`` (the lava backend against numba), ``benchmarks`` (a benchmark script run for its JSON).
``ROOT`` is the repository."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
