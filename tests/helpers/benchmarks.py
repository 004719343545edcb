"""Running a benchmark script of ``benchmarks/`` as the README does, for the smoke tests."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from helpers import ROOT


def run_benchmark(script: str, tmp_path: Path, *args: str, timeout: float) -> dict[str, Any]:
    """``python benchmarks/SCRIPT ARGS --json OUT`` from the repository root; asserts exit code 0
    (showing the tail of its output) and returns the JSON it wrote."""
    out = tmp_path / f"{Path(script).stem}.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args, "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())
