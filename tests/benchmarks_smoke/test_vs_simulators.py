"""Smoke test of ``benchmarks/vs_simulators.py --quick``: tiny versions of every network kind on
our numba backend, NEST and Brian2 (standalone), spikes checked equal, the JSON's keys."""
from __future__ import annotations

import importlib.util

import pytest

from helpers.benchmarks import run_benchmark

# NEST is looked up, not imported: its own libgomp beside numba's OpenMP pool in this (xdist worker)
# process can crash NEST later; the benchmark runs in a subprocess that orders the two.
if importlib.util.find_spec("nest") is None:
    pytest.skip("NEST is a benchmark-only peer: make bench-peers", allow_module_level=True)
pytest.importorskip("brian2", reason="Brian2 is a benchmark-only peer: make bench-peers")

QUICK_CASES = {"mlp_5pct", "ff_k100", "brunel", "brunel_if"}


def test_vs_simulators_quick(tmp_path):
    # the Brian2 project lives under build/ (kept between runs: unchanged, it is not recompiled)
    res = run_benchmark("vs_simulators.py", tmp_path, "--quick", timeout=900)
    for key in ("cases", "min_ratio_nest", "min_ratio_brian2", "spikes_equal", "rasters_equal", "machine",
                "versions", "neuron"):
        assert key in res, key
    assert set(res["cases"]) == QUICK_CASES
    assert res["spikes_equal"] is True and res["rasters_equal"] is True  # ours in float64
    assert res["spikes_equal_float32"] is True and res["rasters_equal_float32"] is True
    assert res["peers"] == ["nest", "brian2"]
    assert all(res["neuron"]["nest_p33_exact"].values())
    for name, c in res["cases"].items():
        assert c["spikes_equal"] and c["rasters_equal"], name
        assert c["spikes_equal_float64"] and c["rasters_equal_float64"], name
        assert sum(c["spike_counts"].values()) > 0, name  # the networks are not silent
        for tool in ("nest", "brian2", "nest_vs_brian2"):
            assert c["spike_check"][tool]["rasters_equal"], (name, tool)
        for tool in ("ours", "ours_float64", "nest", "brian2"):
            assert c[tool]["cpu_s"] > 0 and c[tool]["events_per_s"] > 0, (name, tool)
        for tool in ("nest", "brian2"):
            assert isinstance(c[f"ratio_{tool}"], float) and c[f"ratio_{tool}"] > 0
            assert isinstance(c[f"ratio_{tool}_float64"], float) and c[f"ratio_{tool}_float64"] > 0
            assert len(c["load"][tool]) == 3
        assert c["events"] > 0
    assert isinstance(res["min_ratio_nest"], float) and isinstance(res["min_ratio_brian2"], float)
    assert isinstance(res["min_ratio_nest_float64"], float) and isinstance(res["min_ratio_brian2_float64"], float)
    m = res["machine"]
    assert m["cpu"] and m["threads"] == 1 and m["numba_threads"] == 1
    assert len(m["loadavg_start"]) == 3 and len(m["loadavg_end"]) == 3
    assert res["versions"]["nest"] == "3.10.0" and res["versions"]["brian2"] == "2.9.0"
