"""docs/sparse_networks.md runs as written: its ```python blocks, in order, in one namespace (the
```py blocks, Brian2 and NEST code, are shown, not run)."""
from __future__ import annotations

import re
from pathlib import Path

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "sparse_networks.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.M | re.S)  # as tests/docs/test_python_api.py


def python_blocks(text: str) -> list[str]:
    """The bodies of the ```python fenced blocks of a Markdown text, in order."""
    return _BLOCK.findall(text)


def test_the_guide_runs() -> None:
    blocks = python_blocks(GUIDE.read_text(encoding="utf-8"))
    assert len(blocks) >= 7 and all(b.strip() for b in blocks)
    namespace: dict[str, object] = {"__name__": "sparse_networks_guide"}
    for i, block in enumerate(blocks, start=1):
        exec(compile(block, f"{GUIDE.name} block {i}", "exec"), namespace)  # noqa: S102 - the guide's own code
    assert namespace["counts"].shape == (1, 320)
