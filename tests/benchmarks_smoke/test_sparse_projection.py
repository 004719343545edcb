"""Smoke test of ``benchmarks/sparse_projection.py``: tiny nets, before and after equal bit for bit."""
from __future__ import annotations

from helpers.benchmarks import run_benchmark


def test_sparse_projection_tiny(tmp_path):
    res = run_benchmark("sparse_projection.py", tmp_path, "--quick", "--neurons", "3000", "--steps", "40",
                        "--repeats", "1", "--weights", "both", "--fixed-runs", "3", timeout=600)
    assert {(r["case"], r["weights"]) for r in res["cases"]} == {
        (c, w) for c in ("ff100", "ff1000", "brunel") for w in ("quantised", "float")}
    for r in res["cases"]:
        assert r["outputs_equal"] and r["counts_equal"], r
        assert r["syn_ops"] > 0 and r["kernel_cpu_s_after"] > 0 and r["run_s_before"] > 0
    assert res["fixed_cost"]["after"] > 0 and res["fixed_cost"]["after_cpu"] > 0 and len(res["loadavg"]) == 3
