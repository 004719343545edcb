"""Kernel tests run the CPU LIF kernels with checkpoint segments of ``CKPT_EVERY`` steps whatever the
layer's width (``short_segments``), so that their small layers, which would otherwise recompute
in one segment (``lif_cpu.ckpt_every``), cover the multi-segment backward."""
from __future__ import annotations

import pytest

from spike.kernels import lif_cpu


@pytest.fixture
def short_segments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lif_cpu, "SEGMENT_BYTES", 0)
