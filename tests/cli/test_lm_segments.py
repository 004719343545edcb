"""``spike run GPT.h5 --segments K``: the test tokens cut into K contiguous segments, each run from
a fresh state, reported as one run. The oracle is K separate runs of one segment each, reported by
:func:`spike.models.spikegpt.report.spikegpt_report`: counts add up exactly, per-token figures are
their token-weighted means, bits per token the mean over every predicted token; one segment is
the one-stream run of before, field for field."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from helpers.reports import validated
from helpers.spikegpt import tiny_spikegpt
from spike.backends import run
from spike.cli import main
from spike.compiler.io.hdf5 import load_program, save_program
from spike.compiler.ir.nodes import Dense, Input, Output, Population
from spike.compiler.ir.program import ProgramBuilder
from spike.models.spikegpt.report import spikegpt_report
from spike.models.spikegpt.text import load_corpus, vocab_from_config
from spike.train import distributed as dist_utils
from spike.workflows import lm_run_report, run_lm_program

TOKENS, BOUNDS = 41, [(0, 14), (14, 28), (28, 41)]  # 41 tokens in 3 segments: the first two get the extra one


@pytest.fixture(scope="module")
def gpt(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return tiny_spikegpt(tmp_path_factory.mktemp("gpt"))


def _test_ids(program, text: Path) -> np.ndarray:
    vocab = vocab_from_config(program.metadata["vocab"])
    return np.asarray(load_corpus(text, vocab=vocab).split("test")[:TOKENS], np.int64)


def _alone(program, ids: np.ndarray):
    """One segment run on its own from a fresh state, and its report."""
    x = np.zeros((len(ids), 1, int(program.metadata["spikegpt"]["vocab_size"])), np.float32)
    x[np.arange(len(ids)), 0, ids] = 1.0
    result = run(program, x)
    return result, spikegpt_report(program, result, token_ids=ids[:, None])


def test_k_segments_are_k_separate_runs(gpt: tuple[Path, Path]) -> None:
    path, text = gpt
    program = load_program(path)
    ids = _test_ids(program, text)
    lm = run_lm_program(program, data=str(text), tokens=TOKENS, segments=3)
    assert lm.segments == BOUNDS and lm.distributed is None
    rep = validated(lm_run_report(program, lm, program_path=str(path), source=str(text)))
    runs, reports = zip(*(_alone(program, ids[a:b]) for a, b in BOUNDS))
    lengths = [b - a for a, b in BOUNDS]

    def weighted(get) -> float:  # the token-weighted mean of a per-token figure of the segments
        return sum(n * get(r) for n, r in zip(lengths, reports)) / TOKENS

    assert rep["data"] == {"tokens": TOKENS, "source": str(text), "segments": 3} and rep["steps"] == TOKENS
    assert "3 segments" in rep["ops"]["counts_are"]
    for name, counts in lm.result.ops.per_node.items():  # every count of every node: the sum, exactly
        for key, value in counts.items():
            assert value.tolist() == [sum(float(r.ops.per_node[name][key][0]) for r in runs)], (name, key)
    assert rep["ops"]["total"] == {k: sum(r.ops.total()[k] for r in runs) for k in rep["ops"]["total"]}
    assert any(rep["ops"]["total"][k] > 0 for k in ("spikes", "syn_ops", "macs", "host_flops"))
    # bits per token over the 41 - 3 predicted tokens (a segment's first token is predicted by none)
    want_bits = sum((n - 1) * r.bits_per_token for n, r in zip(lengths, reports)) / (TOKENS - 3)
    assert rep["bits_per_token"] == pytest.approx(want_bits, rel=1e-12)
    for convention, attr in (("executed", "executed"), ("paper_convention", "paper"), ("vanilla_gpt", "vanilla")):
        for key, value in rep["model"]["per_token"][convention].items():
            assert value == pytest.approx(weighted(lambda r: getattr(r, attr)[key]), rel=1e-12), (convention, key)
    for key, value in rep["model"]["energy_pj_per_token"].items():
        assert value == pytest.approx(weighted(lambda r: r.energy_pj[key]), rel=1e-12), key
    for row in rep["model"]["firing"]:  # spikes / neuron updates of the sums; updates per token are fixed
        rate = weighted(lambda r: {f["node"]: f["rate"] for f in r.firing}[row["node"]])
        assert row["rate"] == pytest.approx(rate, rel=1e-12) and 0 < row["rate"] < 1
    for node, *alone in zip(rep["energy"]["per_node"], *(r.energy_detail.per_node for r in reports)):
        assert node["energy_j"] == pytest.approx(sum(a["energy_j"] for a in alone), rel=1e-12)
    assert rep["energy"]["total_j"] == pytest.approx(sum(r.energy_detail.total_j for r in reports), rel=1e-12)
    for block, *alone in zip(lm.report.per_block(), *(r.per_block() for r in reports)):  # what --plot draws
        for key in ("syn_ops", "macs", "host_flops"):
            assert block[key] == pytest.approx(sum(n * a[key] for n, a in zip(lengths, alone)) / TOKENS, rel=1e-12)


def test_one_segment_is_the_one_stream(gpt: tuple[Path, Path]) -> None:
    """``--segments 1`` (the default) reports what the one-stream run always reported."""
    path, text = gpt
    program = load_program(path)
    result, want = _alone(program, _test_ids(program, text))
    lm = run_lm_program(program, data=str(text), tokens=TOKENS)
    assert lm.segments == [(0, TOKENS)]
    assert lm.report.to_json() == want.to_json()  # bits, firing, per-token figures, energy: equal, not close
    assert lm.report.energy_detail.to_json() == want.energy_detail.to_json()
    assert lm.result.ops.to_json() == result.ops.to_json()
    rep = lm_run_report(program, lm, program_path=None, source="t")
    assert rep["ops"]["counts_are"] == f"the whole run of {TOKENS} tokens (one stream), summed over steps"


def test_segments_are_refused_clearly(gpt: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture) -> None:
    path, text = gpt
    program = load_program(path)
    with pytest.raises(ValueError, match="--segments 21: 41 tokens cut into 21 segments leave a segment fewer than "
                                         "2 tokens; run at least 42 tokens"):
        run_lm_program(program, data=str(text), tokens=TOKENS, segments=21)
    assert main(["run", str(path), "--data", str(text), "--tokens", "5", "--segments", "3", "--quiet"]) == 2
    assert "--segments 3: 5 tokens cut into 3 segments" in capsys.readouterr().err
    b = ProgramBuilder()  # a classifier's program
    b.add("in", Input(shape=(4,)))
    b.add("fc", Dense(shape=(2,), in_shape=(4,), weight=np.full((2, 4), 0.5, np.float32)), "in")
    b.add("lif", Population(shape=(2,), beta=np.full(2, 0.5, np.float32), threshold=np.ones(2, np.float32)), "fc")
    b.add("out", Output(shape=(2,)), "lif")
    save_program(b.build({"dataset": "digits"}), tmp_path / "mlp.h5")
    assert main(["run", str(tmp_path / "mlp.h5"), "--segments", "2", "--quiet"]) == 2
    assert "--segments: for SpikeGPT programs only" in capsys.readouterr().err
    monkeypatch.setattr(dist_utils, "is_distributed", lambda: True)  # four processes, three segments
    monkeypatch.setattr(dist_utils, "world_size", lambda: 4)
    with pytest.raises(ValueError, match="--segments 3: fewer segments than the 4 processes"):
        run_lm_program(program, data=str(text), tokens=TOKENS, segments=3)
