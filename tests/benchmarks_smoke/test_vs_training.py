"""Smoke test of ``benchmarks/vs_training.py --quick``: tiny MLP and CNN, one timed step per library."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "vs_training.py"
PEERS = ("snntorch", "spikingjelly", "norse")

for _mod in PEERS:
    pytest.importorskip(_mod)


def test_vs_training_quick(tmp_path):
    out = tmp_path / "vs_training.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    res = json.loads(out.read_text())
    for key in ("workloads", "min_ratio", "machine", "versions", "spike_check_passed"):
        assert key in res
    assert set(res["workloads"]) == {"mlp", "cnn"}
    assert res["spike_check_passed"] is True
    for w in res["workloads"].values():
        assert w["spike_check"]["snntorch"]["exact"]
        for p in PEERS:
            r = w["ratios"][p]
            assert isinstance(r, float) and r > 0
            assert w["ms"][p] > 0 and w["ms"][f"ours:{p}"] > 0
            assert w["spike_check"][p]["equal_fraction"] >= 0.999
    for w in res["workloads"].values():  # the dense floor and the floor with our event-driven layers
        assert w["ms"]["floor"] > 0 and w["ms"]["floor_event"] > 0 and w["ratio_ceiling_event"] > 0
    assert res["event"] == "auto"
    assert isinstance(res["min_ratio"], float) and res["min_ratio"] > 0
    m = res["machine"]
    assert m["torch_threads"] == 1 and len(m["loadavg_before"]) == 3 and len(m["loadavg_after"]) == 3
    assert all(res["versions"][k] for k in ("torch", *PEERS))
