"""Smoke test of ``benchmarks/conv_input_grad.py --quick``: our sparse input gradient against oneDNN."""
from __future__ import annotations

import pytest

from helpers.benchmarks import run_benchmark


@pytest.mark.late  # a fresh Python: by then the suite has compiled the kernels it runs
def test_conv_input_grad_quick(tmp_path):
    res = run_benchmark("conv_input_grad.py", tmp_path, "--quick", "--repeats", "2", timeout=120)
    assert res["name"] == "conv_input_grad" and res["quick"] is True and res["threads"] == 1
    rows = [res["cnn"], *res["random"]]
    assert len(res["random"]) == 6 and 0 < res["cnn"]["density"] < 1
    for r in rows:
        assert r["ours_s"] > 0 and r["onednn_s"] > 0 and r["ratio"] == r["onednn_s"] / r["ours_s"]
        assert r["max_abs_err_ours"] < 1e-5  # float32 rounding of sums of a few terms
    for r, d in zip(res["random"], (0.1, 0.3, 0.5, 0.7, 0.9, 1.0), strict=True):
        assert abs(r["density"] - d) < 0.1  # independent zeros at that density (768 elements)
