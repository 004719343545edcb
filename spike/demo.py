"""``make demo`` (``spike demo``): train -> compile -> run -> count and cost, on the built-in digits.

:func:`run_demo` trains a spiking MLP for ``loihi1`` (rate-coded spikes, reset to zero and one-step
synapses, as Loihi has), compiles it to the event-driven IR, runs it on the numba backend in
float32 (the compiled program must get exactly as many test samples right as the trained model),
compiles it for ``loihi1`` in fixed point (quantised, partitioned onto cores, placed on the mesh),
runs and costs that program, checks it on Lava bit for bit (:func:`lava_check`) and then runs the
FTWT demo.

The FTWT demo (:func:`run_ftwt_demo`) trains a spiking CNN on the digits, prunes it on the fly with
FTWT masks, compiles both networks for a neuromorphic target and counts what the masks save: it
trains the unmasked baseline and its FTWT version (``r = 0.9``), reports the "estimate before
training" (the target rule alone on the baseline), compiles both for ``loihi1`` in float32, runs
them on the numba backend and prints the accuracy and the per-layer operation table with the
saving from the masks.

Loihi's synapses deliver one step late and a program compiled for a Loihi target says so
(``delay=1`` on every projection). The FTWT demo therefore trains the network with the target's
synaptic delay (``train_cnn(target=..., target_fit="delays")``: ``SpikingCNN(synaptic_delay=1)``,
the delay read from the target's ``core.synaptic_delay``) and ``6 + latency`` time steps (the
latency is 6 steps: three convs, two poolings, the classifier, ``SpikingCNN.latency``), so the
compiled program computes exactly what the trained model computes, and checks that the compiled
accuracy equals the trained one. (The model is not quantised:
its first layer takes real-valued pixels and its neurons reset by subtraction, while Loihi's fixed
point needs spike inputs and reset to zero; FTWT gates run in float32 programs.)

:func:`compare_ops` and :func:`evaluate_compiled` are shared with ``benchmarks/ftwt_digits.py``.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spike.backends import run
from spike.compiler.io.hdf5 import save_program
from spike.compiler.ir.nodes import Projection
from spike.compiler.mapping.report import mapping_report
from spike.encoders import Encoder
from spike.plots import ftwt_comparison_figure, plot_report, raster_figure, save_figure
from spike.models.cnn.model import SpikingCNN
from spike.models.cnn.train import estimate_reduction, ftwt_report, train_cnn
from spike.train.checkpoint import atomic_write_json
from spike.train.datasets import load_digits
from spike.train.trainer import target_needs
from spike.workflows import (Report, compile_checkpoint, encoder_of, evaluate_program, probe_populations, target_energy,
                             train_mlp)

__all__ = ["run_demo", "lava_check", "run_ftwt_demo", "evaluate_compiled", "compare_ops", "program_latency",
           "QUICK", "FULL"]

# Training recipes (epochs) for the digits; quick fits a couple of minutes on 2 cores.
QUICK = {"baseline_epochs": 12, "ftwt_epochs": 16}
FULL = {"baseline_epochs": 30, "ftwt_epochs": 30}
BASE_STEPS = 6  # steps through the whole network; a delayed network runs ``latency`` more


def run_demo(out_dir: str | Path = "runs/demo", epochs: int | None = None, lava_samples: int = 8, ftwt: bool = True,
             progress: bool = True) -> dict[str, Any]:
    """Train a spiking MLP for loihi1 on digits, compile it, run it, count and cost it (module docstring).

    ``epochs``: the training epochs of every model (the MLP, the FTWT part's baseline CNN and its
    mask heads); None: 15 for the MLP and :data:`QUICK` for the CNNs.

    The compiled float program must get exactly as many test samples right as the trained model
    did (both encode the split with :func:`spike.train.evaluation.encode_samples`); otherwise
    RuntimeError. Writes the checkpoint, the programs, ``report.json`` and the plots to ``out_dir``;
    returns what ``report.json`` holds."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    print("== 1/4 train a spiking MLP on the built-in digits for loihi1 (rate-coded spikes; reset to zero and "
          "one-step synapses, as Loihi has)")
    trained = train_mlp(out=str(out / "mlp.pt"), dataset="digits", epochs=15 if epochs is None else epochs,
                        target="loihi1", progress=progress)
    print(trained["line"])
    data = load_digits()
    print("\n== 2/4 compile to the event-driven IR and run it on the numba backend (float32)")
    program = compile_checkpoint(str(out / "mlp.pt"))
    save_program(program, out / "mlp_float.h5")
    print(program.summary())
    floating = evaluate_program(program, data.x_test, data.y_test, backend="numba", progress=progress)
    print(f"compiled accuracy {100 * floating.accuracy:.2f}% on {floating.num_samples} digits test samples "
          f"({floating.timing['ms_per_sample']:.3f} ms/sample)")
    ev = trained["evaluation"]
    correct = round(floating.accuracy * floating.num_samples)
    if correct != ev["correct"] or floating.num_samples != ev["num_samples"]:
        raise RuntimeError(f"the compiled float program gets {correct}/{floating.num_samples} test samples right, "
                           f"the trained model {ev['correct']}/{ev['num_samples']} on the same encoded spikes: "
                           "the compiler or the backend changed what the network computes")
    print(f"equal to the trained accuracy ({correct}/{floating.num_samples}, the same encoded test split)")
    print(floating.table())
    print("\n== 3/4 compile for loihi1 in fixed point: quantise, partition onto cores, place on the mesh")
    loihi = compile_checkpoint(str(out / "mlp.pt"), target="loihi1", precision="fixed")
    save_program(loihi, out / "mlp_loihi1.h5")
    print(mapping_report(loihi).render())
    print("\n== 4/4 run the fixed-point program on the numba backend and cost it on loihi1")
    fixed = evaluate_program(loihi, data.x_test, data.y_test, backend="numba", progress=progress)
    print(f"fixed-point accuracy {100 * fixed.accuracy:.2f}% (float {100 * floating.accuracy:.2f}%)")
    print(fixed.table())
    energy = _loihi1_energy(fixed)
    lava = lava_check(loihi, data.x_test[:lava_samples])
    result = {"trained_accuracy": ev["accuracy"],
              "float": floating.to_run_report("digits", program_path=str(out / "mlp_float.h5")),
              "loihi1_fixed": fixed.to_run_report("digits", energy, program_path=str(out / "mlp_loihi1.h5")),
              "lava_equals_numba": lava}
    plot_report(result["loihi1_fixed"], out / "report.png")
    spikes, _ = probe_populations(loihi, data.x_test[:1])
    save_figure(raster_figure(spikes), out / "raster.png")
    if ftwt:
        print("\n== Spiking CNN pruned on the fly with Fire-Together-Wire-Together masks")
        recipe = None if epochs is None else {"baseline_epochs": epochs, "ftwt_epochs": epochs}
        figures = run_ftwt_demo(out / "ftwt", quick=True, progress=progress, recipe=recipe)
        runs = {}
        for label, rep in figures.pop("reports").items():
            print(f"\nenergy of the {label} CNN on loihi1:")
            energy = _loihi1_energy(rep)
            figures[f"energy_{label}"] = energy.to_json()
            runs[label] = rep.to_run_report("digits", energy)
        save_figure(ftwt_comparison_figure(runs["baseline"], runs["ftwt"], metric="energy"), out / "ftwt_report.png")
        result["ftwt"] = figures
    atomic_write_json(out / "report.json", result)
    print(f"report -> {out / 'report.json'}, plots -> {out / 'report.png'}, {out / 'raster.png'}"
          + ("" if not ftwt else f", {out / 'ftwt_report.png'}"))
    return result


def _loihi1_energy(report: Report):
    """Print and return the energy table of ``report``'s counts on loihi1."""
    energy = target_energy(report, report.program, "loihi1")
    print(energy.table())
    return energy


def lava_check(program: Any, x: torch.Tensor) -> dict[str, Any]:
    """Run the fixed-point program on Lava and on numba with the same spikes; compare bit for bit."""
    print(f"\n== Loihi through Lava: the same program on lava-nc for {len(x)} test samples")
    spikes = encoder_of(program)(x, generator=torch.Generator().manual_seed(1))
    by_lava = run(program, spikes, backend="lava", probes=[program.populations()[0] + ".v"])
    by_numba = run(program, spikes, backend="numba", probes=[program.populations()[0] + ".v"])
    same = bool(np.array_equal(by_lava.output, by_numba.output)) and all(
        np.array_equal(by_lava.probes[k], by_numba.probes[k]) for k in by_numba.probes
    )
    print(f"lava output spikes and membranes equal numba's bit for bit: {same} "
          f"(lava {by_lava.timing['ms_per_step']:.2f} ms/step, numba {by_numba.timing['ms_per_step']:.3f} ms/step)")
    if not same:
        raise RuntimeError("the lava run differs from the numba run of the same fixed-point program")
    return {"samples": len(x), "equal": same, "lava_ms_per_step": by_lava.timing["ms_per_step"],
            "numba_ms_per_step": by_numba.timing["ms_per_step"]}


def program_latency(program: Any) -> int:
    """The largest sum of projection delays on a path from an input to an output."""
    best: dict[str, int] = {}
    for stage in program.schedule():
        for name in stage.nodes:
            node = program.node(name)
            here = max((best.get(s, 0) for s in program.sources(name)), default=0)
            best[name] = here + (node.delay if isinstance(node, Projection) else 0)
    return max((best.get(o, 0) for o in program.outputs), default=0)


def evaluate_compiled(program: Any, x: Any, y: Any, steps: int | None = None, backend: str = "numba",
                      progress: bool = False) -> dict[str, Any]:
    """Run ``program`` over ``(x, y)`` and collect the figures: ``accuracy``, ``ops`` (totals per
    sample), ``keep`` (per gated population: neuron updates / (neurons x steps), the fraction of
    channels its gate kept), ``report`` (the :class:`spike.workflows.Report`)."""
    report = evaluate_program(program, x, y, backend=backend, steps=steps, progress=progress)
    return {"accuracy": report.accuracy, "ops": report.ops.total(), "keep": report.kept_channels(), "report": report,
            "steps": report.steps, "ms_per_sample": report.timing["ms_per_sample"]}


def compare_ops(base: Any, ftwt: Any) -> dict[str, Any]:
    """Per-layer and total operation counts of two compiled runs (``Report``s) of the same network,
    without and with masks: rows ``{name, kind, <key>_base, <key>_ftwt, syn_saving}``."""
    keys = ("syn_ops", "macs", "neuron_updates", "spikes", "host_flops")
    rows = []
    for name in base.ops.per_node:
        b = base.ops.node_mean(name)
        f = ftwt.ops.node_mean(name) if name in ftwt.ops.per_node else {k: 0.0 for k in keys}
        if not any(b[k] or f[k] for k in keys):
            continue
        row = {"name": name, "kind": base.ops.kinds.get(name, "")}
        for k in keys:
            row[f"{k}_base"], row[f"{k}_ftwt"] = b[k], f[k]
        row["syn_saving"] = 1 - f["syn_ops"] / b["syn_ops"] if b["syn_ops"] else None
        rows.append(row)
    for name in ftwt.ops.per_node:  # gate nodes exist only in the FTWT program
        if name not in base.ops.per_node:
            f = ftwt.ops.node_mean(name)
            rows.append({"name": name, "kind": ftwt.ops.kinds.get(name, ""),
                         **{f"{k}_base": 0.0 for k in keys}, **{f"{k}_ftwt": f[k] for k in keys}, "syn_saving": None})
    tb, tf = base.ops.total(), ftwt.ops.total()
    total = {"name": "total", "kind": ""}
    for k in keys:
        total[f"{k}_base"], total[f"{k}_ftwt"] = tb[k], tf[k]
    total["syn_saving"] = 1 - tf["syn_ops"] / tb["syn_ops"] if tb["syn_ops"] else None
    return {"rows": rows, "total": total}


def render_ops(table: dict[str, Any]) -> str:
    w = max([24, *(len(r["name"]) for r in table["rows"])])
    head = (f"{'node':<{w}} {'kind':<10} {'syn_ops':>11} {'syn_ops':>11} {'saving':>7} {'updates':>9} {'updates':>9} "
            f"{'spikes':>8} {'spikes':>8}")
    sub = f"{'':<{w}} {'':<10} {'unmasked':>11} {'FTWT':>11} {'':>7} {'unmasked':>9} {'FTWT':>9} {'unmasked':>8} {'FTWT':>8}"
    lines = [head, sub, "-" * len(head)]
    for r in table["rows"] + [table["total"]]:
        if r["name"] == "total":
            lines.append("-" * len(head))
        saving = f"{100 * r['syn_saving']:.1f}%" if r["syn_saving"] is not None else ""
        lines.append(
            f"{r['name']:<{w}} {r['kind'][:10]:<10} {r['syn_ops_base']:>11.0f} {r['syn_ops_ftwt']:>11.0f} {saving:>7} "
            f"{r['neuron_updates_base']:>9.0f} {r['neuron_updates_ftwt']:>9.0f} {r['spikes_base']:>8.1f} {r['spikes_ftwt']:>8.1f}"
        )
    t = table["total"]
    lines.append(f"macs {t['macs_base']:.0f} -> {t['macs_ftwt']:.0f}, host_flops {t['host_flops_base']:.0f} -> "
                 f"{t['host_flops_ftwt']:.0f} (the FTWT heads), per sample")
    return "\n".join(lines)


def _same_count(report: Any, evaluation: dict[str, Any]) -> bool:
    """Did the compiled run get as many test samples right as the trained model's final evaluation?"""
    return round(report.accuracy * report.num_samples) == evaluation["correct"] and \
        report.num_samples == evaluation["num_samples"]


def run_ftwt_demo(out_dir: str | Path, quick: bool = True, ratio: float = 0.9, target: str = "loihi1",
                  progress: bool = False, seed: int = 0, channel_sparsity: float | None = None,
                  recipe: dict[str, int] | None = None) -> dict[str, Any]:
    """Train, estimate, compile and count (module docstring); returns the figures.

    ``quick`` picks the epochs (:data:`QUICK`: about 1.5 minutes on 2 cores; :data:`FULL`);
    ``recipe`` overrides them (``{"baseline_epochs", "ftwt_epochs"}``); ``channel_sparsity`` the
    baseline's penalty weight. Writes ``cnn.pt``, ``cnn_ftwt.pt`` (checkpoints), ``cnn.h5``, ``cnn_ftwt.h5`` (programs for
    ``target``) and ``ftwt_report.json`` (the figures plus both run reports) to ``out_dir``. The
    returned dict holds JSON-able figures and, under ``"reports"``, the two
    :class:`spike.workflows.Report` objects (``.ops``, ``.program``: input for energy tables).
    """
    t_start = time.perf_counter()
    recipe = dict(recipe or (QUICK if quick else FULL))  # {"baseline_epochs", "ftwt_epochs"}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = load_digits()
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    delay = target_needs(target).synaptic_delay
    latency = delay * SpikingCNN("digits").synaptic_depth  # every conv, pooling and the classifier
    steps = BASE_STEPS + latency
    extra = {} if channel_sparsity is None else {"channel_sparsity": channel_sparsity}  # the baseline's
    common = dict(data=data, progress=progress, seed=seed)

    print(f"== FTWT 1/4 train the unmasked spiking CNN on the digits ({steps} steps"
          + (f", {delay}-step synaptic delay as on {target}" if delay else "") + ")")
    base = train_cnn(out=out / "cnn.pt", preset="digits", target=target, target_fit="delays", steps=BASE_STEPS,
                     epochs=recipe["baseline_epochs"], **common, **extra)
    if base["config"]["num_steps"] != steps:
        raise RuntimeError(f"the trained CNN runs {base['config']['num_steps']} steps, expected {steps}")
    print(f"unmasked test accuracy {100 * base['accuracy']:.2f}% -> {out / 'cnn.pt'}")

    encoder = Encoder("direct", steps)
    est = estimate_reduction(base["model"], data.x_test, data.y_test, encoder, ratio)
    print(f"== FTWT 2/4 estimate before training: the target rule at r={ratio} on the trained network keeps "
          + ", ".join(f"{100 * v:.0f}%" for v in est["keep"].values())
          + f" of the channels per layer: {100 * est['reduction']:.1f}% fewer syn_ops expected")

    print(f"== FTWT 3/4 train the FTWT mask heads (r={ratio}) from the baseline")
    ftwt = train_cnn(out=out / "cnn_ftwt.pt", init=out / "cnn.pt", ftwt={"ratio": ratio}, lr=1e-3,
                     epochs=recipe["ftwt_epochs"], **common)
    torch_fig = ftwt_report(ftwt["model"], data.x_test, data.y_test, encoder)
    print(f"FTWT test accuracy {100 * ftwt['accuracy']:.2f}%, mask accuracy "
          + ", ".join(f"{100 * v:.1f}%" for v in torch_fig["mask_accuracy"].values()) + f" -> {out / 'cnn_ftwt.pt'}")

    print(f"== FTWT 4/4 compile both for {target} (float32) and run them on the numba backend")
    pb = compile_checkpoint(str(out / "cnn.pt"), target=target)
    pf = compile_checkpoint(str(out / "cnn_ftwt.pt"), target=target)
    save_program(pb, out / "cnn.h5")
    save_program(pf, out / "cnn_ftwt.h5")
    rb = evaluate_compiled(pb, data.x_test, data.y_test)
    rf = evaluate_compiled(pf, data.x_test, data.y_test)
    table = compare_ops(rb["report"], rf["report"])
    measured = table["total"]["syn_saving"]
    print(f"compiled accuracy: unmasked {100 * rb['accuracy']:.2f}%, FTWT {100 * rf['accuracy']:.2f}% "
          f"({data.num_test} digits test samples, {steps} steps, {rf['ms_per_sample']:.2f} ms/sample on numba)")
    same = {"baseline": _same_count(rb["report"], base["evaluation"]),
            "ftwt": _same_count(rf["report"], ftwt["evaluation"])}
    print("compiled accuracy equals the trained accuracy (the same encoded test split): "
          + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in same.items()))
    print(render_ops(table))
    print("kept channels per gated layer (compiled run): "
          + ", ".join(f"{k} {100 * v:.1f}%" for k, v in rf["keep"].items()))
    print(f"syn_ops saved by the masks: {100 * measured:.1f}% measured, {100 * est['reduction']:.1f}% "
          "predicted before training")

    figures = {
        "ratio": ratio, "target": target, "steps": steps, "synaptic_delay": delay,
        "accuracy": {"baseline": base["accuracy"], "ftwt": ftwt["accuracy"],
                     "baseline_compiled": rb["accuracy"], "ftwt_compiled": rf["accuracy"]},
        "compiled_equals_trained": same,
        "predicted_reduction": est["reduction"], "measured_reduction": measured,
        "keep": rf["keep"], "mask_accuracy": torch_fig["mask_accuracy"],
        "ops": {"baseline": rb["ops"], "ftwt": rf["ops"]}, "op_table": table,
        "programs": {"baseline": str(out / "cnn.h5"), "ftwt": str(out / "cnn_ftwt.h5")},
        "seconds": time.perf_counter() - t_start,
    }
    atomic_write_json(out / "ftwt_report.json", {**figures, "reports": {
        "baseline": rb["report"].to_run_report("digits", program_path=str(out / "cnn.h5")),
        "ftwt": rf["report"].to_run_report("digits", program_path=str(out / "cnn_ftwt.h5"))}})
    print(f"report -> {out / 'ftwt_report.json'} ({figures['seconds']:.0f} s)")
    return {**figures, "reports": {"baseline": rb["report"], "ftwt": rf["report"]}}
