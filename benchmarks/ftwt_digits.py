"""FTWT on the built-in digits: accuracy and measured savings for several target ratios r.

Trains the unmasked spiking CNN (``digits`` preset, 4 steps, direct input) once, then for each r an
FTWT version from it; compiles every network (generic target, float32) and runs it on the numba
backend over the 359 test samples. Prints a markdown table (``--json PATH`` also writes the
figures):

- accuracy of the compiled run (it equals the PyTorch model's) and its change from the baseline;
- per gated layer, the fraction of channels kept (compiled run: neuron updates / (neurons x
  steps)) and the mask accuracy (head mask == targets, PyTorch run);
- ``syn_ops`` and ``macs`` per sample, measured by the numba backend;
- the reduction in ``syn_ops`` predicted before training (the target rule alone on the baseline,
  ``spike.models.cnn.train.estimate_reduction``) and the measured one.

A control row fine-tunes the baseline exactly as the FTWT runs are (same epochs, learning rate, no
sparsity penalty) but without masks, so the savings can be told apart from the fine-tuning.
``--plot PNG`` draws the operations per sample of every node of the unmasked network and of each
FTWT network side by side (:func:`spike.plots.ftwt_comparison_figure`; ``docs/ftwt_digits.png``).

Usage: ``python benchmarks/ftwt_digits.py [--ratios 1.0 0.95 0.9 0.85] [--json out.json] [--plot out.png]``
(about a minute per ratio on 2 cores).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from spike.demo import evaluate_compiled
from spike.encoders import Encoder
from spike.models.cnn.train import estimate_reduction, ftwt_report, train_cnn
from spike.plots import ftwt_comparison_figure, save_figure
from spike.train.checkpoint import atomic_write_json
from spike.train.datasets import load_digits
from spike.workflows import compile_checkpoint


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ratios", type=float, nargs="+", default=[1.0, 0.95, 0.9, 0.85])
    p.add_argument("--epochs", type=int, default=12, help="baseline epochs")
    p.add_argument("--ftwt-epochs", type=int, default=16)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--channel-sparsity", type=float, default=None, help="default: spike.models.cnn.train's")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", default=None, help="where checkpoints go (default: a temporary folder)")
    p.add_argument("--json", default=None)
    p.add_argument("--plot", default=None, metavar="PNG", help="operations per node, unmasked and every r side by side")
    args = p.parse_args(argv)

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    tmp = tempfile.TemporaryDirectory() if args.out_dir is None else None
    out = Path(args.out_dir or tmp.name)
    out.mkdir(parents=True, exist_ok=True)
    data = load_digits()
    encoder = Encoder("direct", args.steps)
    extra = {} if args.channel_sparsity is None else {"channel_sparsity": args.channel_sparsity}
    common = dict(data=data, progress=False, seed=args.seed)
    t0 = time.perf_counter()
    base = train_cnn(out=out / "cnn.pt", steps=args.steps, epochs=args.epochs, **common, **extra)
    base_run = evaluate_compiled(compile_checkpoint(str(out / "cnn.pt")), data.x_test, data.y_test)
    run_reports = {"unmasked": base_run["report"].to_run_report("digits")}
    rows: list[dict[str, Any]] = [{
        "ratio": None, "accuracy": base_run["accuracy"], "accuracy_torch": base["accuracy"], "keep": {},
        "mask_accuracy": {}, "syn_ops": base_run["ops"]["syn_ops"], "macs": base_run["ops"]["macs"],
        "predicted_reduction": None, "measured_reduction": None, "seconds": time.perf_counter() - t0,
    }]
    print(f"baseline: {100 * base_run['accuracy']:.2f}% ({rows[0]['seconds']:.0f} s)", file=sys.stderr)
    # control: the baseline fine-tuned exactly as the FTWT runs are, without masks
    t1 = time.perf_counter()
    train_cnn(out=out / "cnn_control.pt", init=out / "cnn.pt", lr=1e-3, epochs=args.ftwt_epochs,
              channel_sparsity=0.0, **common)
    ctrl = evaluate_compiled(compile_checkpoint(str(out / "cnn_control.pt")), data.x_test, data.y_test)
    control = {"accuracy": ctrl["accuracy"], "syn_ops": ctrl["ops"]["syn_ops"], "macs": ctrl["ops"]["macs"],
               "seconds": time.perf_counter() - t1}
    for r in args.ratios:
        t1 = time.perf_counter()
        est = estimate_reduction(base["model"], data.x_test, data.y_test, encoder, r)
        ck = out / f"cnn_ftwt_{r:g}.pt"
        ft = train_cnn(out=ck, init=out / "cnn.pt", ftwt={"ratio": r}, lr=1e-3, epochs=args.ftwt_epochs, **common)
        fig = ftwt_report(ft["model"], data.x_test, data.y_test, encoder)
        res = evaluate_compiled(compile_checkpoint(str(ck)), data.x_test, data.y_test)
        run_reports[f"r={r:g}"] = res["report"].to_run_report("digits")
        rows.append({
            "ratio": r, "accuracy": res["accuracy"], "accuracy_torch": ft["accuracy"],
            "keep": res["keep"], "mask_accuracy": fig["mask_accuracy"],
            "syn_ops": res["ops"]["syn_ops"], "macs": res["ops"]["macs"],
            "predicted_reduction": est["reduction"],
            "measured_reduction": 1 - res["ops"]["syn_ops"] / base_run["ops"]["syn_ops"],
            "reduction_vs_control": 1 - res["ops"]["syn_ops"] / control["syn_ops"],
            "seconds": time.perf_counter() - t1,
        })
        print(f"r={r:g}: {100 * res['accuracy']:.2f}% ({rows[-1]['seconds']:.0f} s)", file=sys.stderr)
    if tmp is not None:
        tmp.cleanup()
    table = render(rows, control)
    print(table)
    result = {"rows": rows, "control": control, "steps": args.steps, "epochs": args.epochs, "ftwt_epochs": args.ftwt_epochs,
              "seed": args.seed, "table": table}
    if args.json:
        atomic_write_json(args.json, result)
    if args.plot:
        base_report = run_reports.pop("unmasked")
        print(f"plot -> {save_figure(ftwt_comparison_figure(base_report, run_reports), args.plot)}", file=sys.stderr)
    return result


def render(rows: list[dict[str, Any]], control: dict[str, Any]) -> str:
    base = rows[0]
    pct = lambda v: "" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    lines = [
        "| r | accuracy | change | kept channels per layer | mask accuracy per layer | syn_ops | macs "
        "| predicted syn_ops reduction | measured syn_ops reduction |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| unmasked | {pct(base['accuracy'])} | | 100% | | {base['syn_ops']:.0f} | {base['macs']:.0f} | | |",
        f"| unmasked, fine-tuned like FTWT (control) | {pct(control['accuracy'])} | "
        f"{100 * (control['accuracy'] - base['accuracy']):+.1f} | 100% | | {control['syn_ops']:.0f} | "
        f"{control['macs']:.0f} | | {pct(1 - control['syn_ops'] / base['syn_ops'])} |",
    ]
    for r in rows[1:]:
        keep = " / ".join(f"{100 * v:.0f}%" for v in r["keep"].values())
        macc = " / ".join(f"{100 * v:.0f}%" for v in r["mask_accuracy"].values())
        change = 100 * (r["accuracy"] - base["accuracy"])
        lines.append(
            f"| {r['ratio']:g} | {pct(r['accuracy'])} | {change:+.1f} | {keep} | {macc} | {r['syn_ops']:.0f} "
            f"| {r['macs']:.0f} | {pct(r['predicted_reduction'])} | {pct(r['measured_reduction'])} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
