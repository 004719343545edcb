"""Smoke test of ``benchmarks/vs_training.py --quick``: tiny MLP and CNN, one timed step per library."""
from __future__ import annotations

import pytest

from helpers.benchmarks import run_benchmark

PEERS = ("snntorch", "spikingjelly", "norse")

for _mod in PEERS:
    pytest.importorskip(_mod)


@pytest.mark.late  # a fresh Python: by then the suite has compiled the LIF kernels it runs
def test_vs_training_quick(tmp_path):
    res = run_benchmark("vs_training.py", tmp_path, "--quick", timeout=120)
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
            assert w["spike_check"][p]["fused_equal"] is True  # our LIF -> pool pairs fused and apart
    for w in res["workloads"].values():  # the dense floor and the floor with our event-driven layers
        assert w["ms"]["floor"] > 0 and w["ms"]["floor_event"] > 0 and w["ratio_ceiling_event"] > 0
    for w in res["workloads"].values():  # page faults counted per contender
        assert set(w["faults_per_step"]) == set(w["ms"]) and all(f >= 0 for f in w["faults_per_step"].values())
    assert res["event"] == "auto" and res["malloc"] == "keep"
    assert isinstance(res["min_ratio"], float) and res["min_ratio"] > 0
    m = res["machine"]
    assert m["torch_threads"] == 1 and len(m["loadavg_before"]) == 3 and len(m["loadavg_after"]) == 3
    assert all(res["versions"][k] for k in ("torch", *PEERS))
