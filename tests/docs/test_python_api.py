"""docs/python_api.md runs as written: its ```python blocks, in order, in one namespace, in a
temporary working directory (the files the guide writes land there)."""
from __future__ import annotations

import re
from pathlib import Path

import matplotlib
import pytest

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "python_api.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.M | re.S)


def python_blocks(text: str) -> list[str]:
    """The bodies of the ```python fenced blocks of a Markdown text, in order."""
    return _BLOCK.findall(text)


def test_the_guide_has_code() -> None:
    blocks = python_blocks(GUIDE.read_text(encoding="utf-8"))
    assert len(blocks) >= 8 and all(b.strip() for b in blocks)


def test_python_api_guide_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "python_api_guide"}
    for i, block in enumerate(python_blocks(GUIDE.read_text(encoding="utf-8")), start=1):
        code = compile(block, f"{GUIDE.name} block {i}", "exec")
        exec(code, namespace)  # noqa: S102 - the guide's own code
    for name in ("energy.png", "raster.png", "membranes.png", "digits.h5", "digits.nir"):
        assert (tmp_path / name).stat().st_size > 0, name
