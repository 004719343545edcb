"""Shared test setup: ``tests/`` goes on the import path, so that every suite (one folder per part
of ``spike/``, and ``conformance/``) imports the shared builders as ``helpers`` (``tests/helpers/``)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

TESTS = str(Path(__file__).resolve().parent)
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)

# Property tests: "suite" by default; `pytest --hypothesis-profile=fuzz` for a long fuzzing run.
_SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large]
settings.register_profile("suite", max_examples=150, deadline=None, suppress_health_check=_SLOW_OK)
settings.register_profile("fuzz", max_examples=3000, deadline=10_000, suppress_health_check=_SLOW_OK)
settings.load_profile("suite")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``late`` go last: each starts a fresh Python that would compile from cold every
    Numba kernel it runs; by then the rest of the suite has compiled them into the on-disk cache
    (a cold suite on 2 cores spent about 200 s compiling in the CUDA-simulator check alone). The
    files that hold one go last as a whole, so that ``make test``'s ``--dist loadfile`` (each file
    on one worker) schedules them last too."""
    late_files = {item.path for item in items if item.get_closest_marker("late")}
    items.sort(key=lambda item: (item.path in late_files, item.get_closest_marker("late") is not None))
