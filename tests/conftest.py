"""Shared test setup: ``tests/`` goes on the import path, so that every suite (one folder per part
of ``spike/``, and ``conformance/``) imports the shared builders as ``helpers`` (``tests/helpers/``)."""
from __future__ import annotations

import sys
from pathlib import Path

TESTS = str(Path(__file__).resolve().parent)
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)
