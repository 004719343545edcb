"""Shared test setup: the suites in sub-folders (``tests/conformance/``) import the shared builders
of the flat test modules (``from test_compile_agreement import dyadic_``), so ``tests/`` is on the
import path for all of them."""
from __future__ import annotations

import sys
from pathlib import Path

TESTS = str(Path(__file__).resolve().parent)
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)
