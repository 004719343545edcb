"""``spike train cnn`` (baseline, then FTWT from it), the estimate before training, and the demo (one
epoch each: these check the plumbing, not the accuracy)."""
from __future__ import annotations

import json

import pytest
import torch

from spike.train.checkpoint import load_checkpoint
from spike.cli import main
from helpers.reports import validated


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("cnn")
    base, ftwt = d / "cnn.pt", d / "cnn_ftwt.pt"
    assert main(["train", "cnn", "--dataset", "digits", "--out", str(base), "--epochs", "1", "--quiet"]) == 0
    assert main(["train", "cnn", "--ftwt", "0.9", "--init", str(base), "--out", str(ftwt), "--epochs", "2",
                 "--ftwt-window", "3", "--quiet"]) == 0
    return base, ftwt


def test_train_cnn_baseline_then_ftwt(trained, capsys) -> None:
    base, ftwt = trained
    cb, cf = load_checkpoint(base)["config"], load_checkpoint(ftwt)["config"]
    assert cb["model"]["kind"] == "cnn" and "ftwt" not in cb["model"]["kwargs"]
    assert cf["model"]["kwargs"]["ftwt"] == {"ratio": 0.9, "mode": "decoupled", "mass": "spikes", "window": 3}
    assert cf["model"]["kwargs"]["layers"] == cb["model"]["kwargs"]["layers"]  # architecture from --init
    assert cf["num_steps"] == cb["num_steps"] == 4 and cf["training"]["init"] == str(base)
    sb, sf = load_checkpoint(base)["model_state"], load_checkpoint(ftwt)["model_state"]
    heads = [k for k in sf if ".gate." in k]
    assert heads and set(sf) - set(heads) == set(sb)
    # compile and run the FTWT checkpoint through the CLI
    h5 = ftwt.with_suffix(".h5")
    assert main(["compile", str(ftwt), "--out", str(h5)]) == 0
    assert main(["run", str(h5), "--limit", "20", "--quiet", "--json", str(h5.with_suffix(".json"))]) == 0
    out = capsys.readouterr().out
    assert "gate" in out and "accuracy" in out
    rep = validated(h5.with_suffix(".json"))  # one schema for MLP, CNN, FTWT and SpikeGPT runs
    assert rep["program"]["model"] == "cnn" and rep["data"]["samples"] == 20
    assert any(r["kind"] == "gate" for r in rep["ops"]["per_node"])
    kept = rep["model"]["kept_channels"]  # FTWT: the fraction of channels each gate kept
    assert rep["model"]["kind"] == "ftwt" and kept and all(0 <= v <= 1 for v in kept.values())


def test_init_must_fit(tmp_path, trained) -> None:
    base, _ = trained
    bad = tmp_path / "bad.pt"
    ck = load_checkpoint(base)
    ck["model_state"] = {k: v for k, v in ck["model_state"].items() if "fc" not in k}
    torch.save(ck, bad)
    rc = main(["train", "cnn", "--ftwt", "0.9", "--init", str(bad), "--out", str(tmp_path / "x.pt"),
               "--epochs", "1", "--quiet"])
    assert rc == 2


def test_estimate_before_training(trained) -> None:
    from spike.models.cnn.train import estimate_reduction, load_cnn
    from spike.train.datasets import load_digits
    from spike.encoders import Encoder

    model, cfg = load_cnn(trained[0])
    data = load_digits()
    enc = Encoder.from_dict(cfg["encoding"])
    x, y = data.x_test[:64], data.y_test[:64]
    loose = estimate_reduction(model, x, y, enc, 1.0)
    tight = estimate_reduction(model, x, y, enc, 0.8)
    assert loose["syn_ops_unmasked"] == tight["syn_ops_unmasked"] > 0
    assert 0 <= loose["reduction"] < tight["reduction"] < 1
    assert all(0 < v <= 1 for v in tight["keep"].values())


def test_ftwt_demo_runs(tmp_path) -> None:
    from spike.demo import run_ftwt_demo

    fig = run_ftwt_demo(tmp_path, recipe={"baseline_epochs": 1, "ftwt_epochs": 1})
    assert fig["steps"] == 12 and fig["synaptic_delay"] == 1
    # the program compiled for loihi1 computes what the trained (delayed) model computes
    assert fig["accuracy"]["baseline_compiled"] == pytest.approx(fig["accuracy"]["baseline"], abs=0.01)
    assert fig["accuracy"]["ftwt_compiled"] == pytest.approx(fig["accuracy"]["ftwt"], abs=0.01)
    assert fig["ops"]["ftwt"]["host_flops"] > 0 and fig["reports"]["ftwt"].program.metadata.get("mapping")
    saved = json.loads((tmp_path / "ftwt_report.json").read_text())
    assert saved["measured_reduction"] == pytest.approx(fig["measured_reduction"])
    for label in ("baseline", "ftwt"):  # each compiled run in the `spike run` schema
        validated(saved["reports"][label])
    assert saved["reports"]["ftwt"]["model"] == {"kind": "ftwt", "kept_channels": fig["keep"]}
    assert "model" not in saved["reports"]["baseline"]
