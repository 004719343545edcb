"""The one atomic writer behind checkpoints, programs, NIR files, reports and plots."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from spike.atomic import atomic_path, atomic_write_bytes


def test_new_file_gets_normal_permissions(tmp_path: Path) -> None:
    mask = os.umask(0o022)
    try:
        out = atomic_write_bytes(tmp_path / "a.bin", b"xyz")
    finally:
        os.umask(mask)
    assert out.read_bytes() == b"xyz"
    assert (out.stat().st_mode & 0o777) == 0o644  # not mkstemp's 0o600


def test_failure_keeps_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "p.h5"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.h5"]
