"""Smoke test of ``benchmarks/lif_train.py --quick``: our fused LIF layer against snnTorch's ``Leaky``."""
from __future__ import annotations

import pytest

from helpers.benchmarks import run_benchmark

pytest.importorskip("snntorch")


@pytest.mark.late  # a fresh Python: by then the suite has compiled the LIF kernels it runs
def test_lif_train_quick(tmp_path):
    res = run_benchmark("lif_train.py", tmp_path, "--quick", "--repeats", "2", timeout=120)
    assert res["name"] == "lif_train" and res["quick"] is True and res["threads"] == 1
    for key in ("t100", "t1000"):
        c = res["configs"][key]
        assert c["grad_max_abs_diff_vs_snntorch"] == 0.0  # the same dL/dx as snnTorch, bit for bit
        assert 0.1 < c["spike_rate"] < 0.3
        for t in ("ours_s", "ours_layer_s", "snntorch_s", "mem_floor_s"):
            assert c[t] > 0
        assert c["step_floor_ratio"] == c["ours_s"] / c["mem_floor_s"]
        assert c["layer_floor_ratio"] == c["ours_layer_s"] / c["mem_floor_s"]
    assert res["layer_floor_ratio"] == res["configs"]["t100"]["layer_floor_ratio"]
    assert res["step_floor_ratio_t1000"] == res["configs"]["t1000"]["step_floor_ratio"]
