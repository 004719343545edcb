"""The ``spike`` command line: train, compile, run, demo."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

import torch

from spike import __version__


def _train_mlp(args: argparse.Namespace) -> dict[str, Any]:
    """``spike train mlp``; with ``--target`` the choices that target needs (:func:`spike.train.trainer.fit_to_target`).

    The printed test accuracy is the test split encoded as ``spike run`` encodes it
    (:func:`spike.workflows.evaluate_model`, seed 0); the checkpoint records it (``test_accuracy``).
    """
    from spike.train.checkpoint import make_config, record_evaluation
    from spike.train.datasets import load_dataset
    from spike.train.distributed import is_main_process
    from spike.encoders import Encoder
    from spike.workflows import evaluate_model
    from spike.losses import rate_cross_entropy
    from spike.models import build_model
    from spike.train.trainer import Trainer, accuracy, fit_to_target, set_seed, target_needs

    needs = target_needs(args.target) if getattr(args, "target", None) else None
    chosen = fit_to_target(needs, encoding=args.encoding, reset=args.reset,
                           reset_delay=False if args.no_reset_delay else None)
    set_seed(args.seed)
    base_steps = 16 if args.steps is None else args.steps  # the train command's defaults for an MLP
    args.beta = 0.9 if args.beta is None else args.beta
    args.lr = 5e-3 if args.lr is None else args.lr
    data = load_dataset(args.dataset, args.data_root)
    in_features = int(torch.tensor(data.input_shape).prod())
    kwargs = dict(
        in_features=in_features, num_classes=data.num_classes, hidden=list(args.hidden),
        beta=args.beta, threshold=1.0, reset=chosen["reset"], reset_delay=chosen["reset_delay"],
    )
    if chosen["synaptic_delay"]:
        kwargs["synaptic_delay"] = chosen["synaptic_delay"]
    model = build_model("mlp", **kwargs)
    steps = base_steps + model.latency  # the output trails the input by the latency
    encoder = Encoder(chosen["encoding"], steps)
    extra = {"target": needs.record()} if needs is not None else {}
    config = make_config("mlp", kwargs, encoder.to_dict(), steps, args.dataset, **extra)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs)
    enc_gen = torch.Generator().manual_seed(args.seed)

    def forward(m: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        return m(encoder(x, generator=enc_gen))

    trainer = Trainer(
        model, opt, rate_cross_entropy, (data.x_train, data.y_train), epochs=args.epochs,
        batch_size=args.batch_size, seed=args.seed, eval_data=(data.x_test, data.y_test),
        checkpoint_path=args.out, scheduler=sched, forward_fn=forward,
        metric_fn=lambda out, y: accuracy(out.sum(0), y), progress=not args.quiet,
        resume=args.resume, config=config, generators={"encoder": enc_gen},
    )
    history = trainer.fit()
    result = evaluate_model(model, encoder, data.x_test, data.y_test)
    ckpt = record_evaluation(args.out, result) if is_main_process() else None
    steps_text = f"{base_steps} + {model.latency} steps" if model.latency else f"{steps} steps"
    where = f", for {needs.name} ({needs.synaptic_delay}-step synaptic delay)" if needs is not None else ""
    print(f"test accuracy {100 * result['accuracy']:.2f}% ({data.num_test} {args.dataset} test samples, "
          f"{steps_text}, {chosen['encoding']} encoding{where}) -> {args.out}")
    return {"accuracy": result["accuracy"], "evaluation": result, "history": history, "checkpoint": ckpt}


def _load_model(path: str) -> tuple[torch.nn.Module, dict[str, Any]]:
    from spike.train.checkpoint import load_checkpoint
    from spike.models import build_model

    ckpt = load_checkpoint(path)
    cfg = ckpt["config"]
    model = build_model(cfg["model"]["kind"], **cfg["model"]["kwargs"])
    model.load_state_dict(ckpt["model_state"])
    model.eval()
    return model, cfg


def compile_checkpoint(path: str, target: str = "generic", precision: str = "float32", calibrate: int = 64,
                       target_delays: str = "balanced"):
    """Rebuild the model in a checkpoint and compile it for ``target``.

    The encoding travels in the program's metadata. On a target with cores the program is
    partitioned and placed, weighting traffic by firing rates measured first by a run of the
    generic float program on the first ``calibrate`` training samples.
    """
    from spike.compiler import ProgramError
    from spike.compiler import compile as compile_model
    from spike.workflows import calibration_rates
    from spike.train.datasets import load_dataset
    from spike.encoders import Encoder
    from spike.hardware import load_target

    model, cfg = _load_model(path)
    hw = load_target(target)
    encoder = Encoder.from_dict(cfg["encoding"])
    data = load_dataset(cfg["dataset"], cfg.get("data_root")) if cfg.get("dataset") else None
    if data is None:
        raise ValueError(f"{path}: the checkpoint's config names no dataset, so the input shape is unknown")
    gen = torch.Generator().manual_seed(0)
    example = encoder(data.x_train[:1], generator=gen)
    signal = "real" if encoder.kind == "direct" else "spike"
    meta = {"encoding": encoder.to_dict(), "num_steps": cfg["num_steps"], "dataset": cfg.get("dataset"),
            "source": str(path)}
    rates = None
    if hw.has_cores:
        generic = compile_model(model, example, input_signal=signal, metadata=meta)
        rates = calibration_rates(generic, encoder(data.x_train[:calibrate], generator=gen))
    try:
        return compile_model(model, example, target=hw.name, precision=precision, input_signal=signal, metadata=meta,
                             target_delays=target_delays, firing_rates=rates)
    except ProgramError as exc:
        trained_for = (cfg.get("target") or {}).get("name")
        if precision != "fixed" or trained_for == hw.name:
            raise
        kind = cfg["model"]["kind"]
        raise ValueError(f"{path}: {exc}. The model was not trained for {hw.name}: retrain it with "
                         f"`spike train {kind} --target {hw.name} ...`, which picks the spiking input, reset and "
                         "synaptic delays the target needs") from None


def _train_cnn(args: argparse.Namespace) -> dict[str, Any]:
    """``spike train cnn``: the unmasked baseline, or with ``--ftwt R`` FTWT masks (``--init`` a baseline)."""
    from spike.models.cnn.train import train_cnn

    ftwt = None
    if args.ftwt is not None:
        ftwt = {"ratio": args.ftwt, "mode": args.ftwt_mode, "mass": args.ftwt_mass, "window": args.ftwt_window}
    overrides: dict[str, Any] = {}
    if args.beta is not None:
        overrides["beta"] = args.beta
    if args.init is None:
        overrides.setdefault("beta", 0.5)
    if args.reset is not None:
        overrides["reset"] = args.reset
    if args.no_reset_delay:
        overrides["reset_delay"] = False
    from spike.models.cnn.model import DATASET_PRESETS

    preset = args.preset or DATASET_PRESETS.get(args.dataset, "digits")
    result = train_cnn(
        out=args.out, dataset=args.dataset, data_root=args.data_root, preset=preset, model_kwargs=overrides,
        steps=args.steps if args.steps is not None else 4, encoding=args.encoding, epochs=args.epochs,
        lr=args.lr if args.lr is not None else (1e-3 if ftwt else 5e-3),
        head_lr=args.head_lr, batch_size=args.batch_size, seed=args.seed, ftwt=ftwt, init=args.init,
        channel_sparsity=args.channel_sparsity, resume=args.resume, progress=not args.quiet,
        target=args.target,
    )
    cfg = result["config"]
    what = f"FTWT r={args.ftwt}" if ftwt else "unmasked"
    latency = result["model"].latency
    steps_text = f"{cfg['num_steps'] - latency} + {latency} steps" if latency else f"{cfg['num_steps']} steps"
    tgt = cfg.get("target")
    where = f", for {tgt['name']} ({tgt['synaptic_delay']}-step synaptic delay)" if tgt else ""
    print(f"test accuracy {100 * result['accuracy']:.2f}% ({what} spiking CNN, {cfg['dataset']}, {steps_text}, "
          f"{cfg['encoding']['kind']} encoding{where}) -> {args.out}")
    return result


def _cmd_train(args: argparse.Namespace) -> int:
    if args.model == "cnn":
        _train_cnn(args)
        return 0
    if args.model == "spikegpt":
        from spike.cli_spikegpt import train_spikegpt

        if args.target is not None:
            raise ValueError("--target: spike train spikegpt trains for host targets only (SpikeGPT is mostly "
                             "host ops no neuromorphic core runs); leave --target out")

        train_spikegpt(args)
        return 0
    _train_mlp(args)
    return 0


def compile_nir(path: str, target: str, precision: str, dt: float, reset: str | None, target_delays: str = "balanced"):
    """Import a NIR graph and compile it (mapped with uniform rates on a target with cores)."""
    from spike.compiler import compile as compile_model

    return compile_model(path, target=target, precision=precision, nir_options={"dt": dt, "reset": reset},
                         target_delays=target_delays)


def delays_line(program: Any) -> str | None:
    """What the delay pass did, in one line (None for a target without synaptic delays)."""
    rec = program.metadata.get("target_delays")
    if not rec:
        return None
    d, lat = rec["synaptic_delay"], rec["latency"]
    if rec["mode"] == "raw":
        return (f"target delays: raw ({d}-step synapses, no compensation): this program does NOT compute the "
                "trained network; merging paths and layers lag as the target's delays make them")
    if rec["mode"] == "as trained":
        return f"target delays: as trained (the model has the target's {d}-step synaptic delays); latency {lat} steps"
    return (f"target delays: compensated ({d}-step synapses, merging paths balanced); latency {lat} steps: runs "
            f"feed T + {lat} steps and return outputs aligned with the input, equal to the trained network")


def _cmd_compile(args: argparse.Namespace) -> int:
    from spike.compiler.io.hdf5 import save_program

    from spike.cli_spikegpt import compile_lm, is_lm_checkpoint

    if args.checkpoint.endswith(".nir"):
        program = compile_nir(args.checkpoint, args.target, args.precision, args.dt, args.reset, args.target_delays)
    elif is_lm_checkpoint(args.checkpoint):
        program = compile_lm(args.checkpoint, args.target, args.precision)
    else:
        program = compile_checkpoint(args.checkpoint, args.target, args.precision, target_delays=args.target_delays)
    save_program(program, args.out)
    print(program.summary())
    if program.metadata.get("mapping"):
        from spike.compiler.mapping.partition import mapping_report

        print(mapping_report(program).render())
    line = delays_line(program)
    if line:
        print(line)
    print(f"-> {args.out}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from spike.compiler.io.nir_export import save_nir, to_nir
    from spike.compiler.io.hdf5 import load_program

    if args.checkpoint.endswith(".h5"):
        program = load_program(args.checkpoint)
    else:
        program = compile_checkpoint(args.checkpoint)
    save_nir(to_nir(program, dt=args.dt), args.nir)
    print(f"NIR graph ({len(program.graph)} IR nodes) -> {args.nir}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from spike.train.checkpoint import atomic_write_json
    from spike.compiler.io.hdf5 import load_program
    from spike.train.datasets import load_dataset
    from spike.workflows import evaluate_program

    program = load_program(args.program)
    if program.metadata.get("model") == "spikegpt":
        return _run_lm(program, args)
    dataset = args.dataset or program.metadata.get("dataset")
    if not dataset:
        raise SystemExit("spike run: --dataset is needed (the program does not name one)")
    data = load_dataset(dataset, args.data_root)
    x, y = data.x_test, data.y_test
    if args.limit:
        x, y = x[: args.limit], y[: args.limit]
    report = evaluate_program(program, x, y, backend=args.backend, steps=args.steps,
                              batch_size=args.batch_size, progress=not args.quiet)
    print(f"accuracy {100 * report.accuracy:.2f}% on {report.num_samples} {dataset} test samples, "
          f"{report.steps} steps, backend {args.backend} ({report.timing['ms_per_sample']:.2f} ms/sample)")
    line = delays_line(program)
    if line:
        print(line)
    print(report.table())
    result = report.to_json()
    target = args.target or program.metadata.get("target", "generic")
    energy = _print_energy(report, program, target)
    if energy is not None:
        result["energy"] = energy.to_json()
    if args.json:
        atomic_write_json(args.json, result)
        print(f"report -> {args.json}")
    if args.plot:
        from spike.energy import plot_report

        if energy is None:
            raise ValueError(f"--plot needs a target with energy figures; {target!r} has none")
        plot_report({**result, "energy": result["energy"]}, args.plot)
        print(f"plot -> {args.plot}")
    return 0


def _run_lm(program: Any, args: argparse.Namespace) -> int:
    """``spike run`` of a compiled SpikeGPT: firing rates, counts and energy three ways."""
    from spike.train.checkpoint import atomic_write_json
    from spike.cli_spikegpt import run_lm_program

    target = args.target or "cmos45nm_fp32"
    report, result = run_lm_program(program, backend=args.backend, data=args.data, tokens=args.tokens,
                                    tokenizer=args.tokenizer, target=target, progress=not args.quiet)
    print(f"backend {args.backend}: {result.timing['ms_per_step']:.2f} ms per token")
    print(report.table())
    if args.json:
        atomic_write_json(args.json, {"backend": args.backend, "timing": result.timing, **report.to_json(),
                                      "energy": report.energy_detail.to_json()})
        print(f"report -> {args.json}")
    if args.plot:
        from spike.energy import plot_report

        plot_report(report.energy_detail, args.plot)
        print(f"plot -> {args.plot}")
    return 0


def _print_energy(report: Any, program: Any, target: str):
    """Energy table for targets that have energy figures (None for 'generic')."""
    from spike.energy import energy_report
    from spike.hardware import load_target

    hw = load_target(target)
    if not any(path.startswith("energy.") for path in hw.figures()):
        return None
    energy = energy_report(report.ops, program, hw, report.steps)
    print(energy.table())
    return energy


def _cmd_demo(args: argparse.Namespace) -> int:
    """Train a spiking MLP for loihi1 on digits, compile it, run it, count and cost it.

    The compiled float program must get exactly as many test samples right as the trained model
    did (both encode the split with :func:`spike.workflows.encode_samples`); otherwise RuntimeError."""
    from spike.train.checkpoint import atomic_write_json
    from spike.compiler.mapping.partition import mapping_report
    from spike.compiler.io.hdf5 import save_program
    from spike.train.datasets import load_digits
    from spike.energy import plot_report
    from spike.workflows import evaluate_program

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    quiet = ["--quiet"] if args.quiet else []
    print("== 1/4 train a spiking MLP on the built-in digits for loihi1 (rate-coded spikes; reset to zero and "
          "one-step synapses, as Loihi has)")
    trained = _train_mlp(_parser().parse_args(
        ["train", "mlp", "--dataset", "digits", "--out", str(out / "mlp.pt"), "--epochs", str(args.epochs),
         "--target", "loihi1"] + quiet
    ))
    data = load_digits()
    print("\n== 2/4 compile to the event-driven IR and run it on the numba backend (float32)")
    program = compile_checkpoint(str(out / "mlp.pt"))
    save_program(program, out / "mlp_float.h5")
    print(program.summary())
    floating = evaluate_program(program, data.x_test, data.y_test, backend="numba", progress=not args.quiet)
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
    fixed = evaluate_program(loihi, data.x_test, data.y_test, backend="numba", progress=not args.quiet)
    print(f"fixed-point accuracy {100 * fixed.accuracy:.2f}% (float {100 * floating.accuracy:.2f}%)")
    print(fixed.table())
    energy = _print_energy(fixed, loihi, "loihi1")
    lava = _lava_check(loihi, data.x_test[: args.lava_samples])
    result = {"trained_accuracy": ev["accuracy"], "float": floating.to_json(),
              "loihi1_fixed": {**fixed.to_json(), "energy": energy.to_json()}, "lava_equals_numba": lava}
    plot_report(result["loihi1_fixed"], out / "report.png")
    if not args.no_ftwt:
        from spike.models.cnn.demo import run_ftwt_demo

        print("\n== Spiking CNN pruned on the fly with Fire-Together-Wire-Together masks")
        ftwt = run_ftwt_demo(out / "ftwt", quick=True, progress=not args.quiet)
        reports = ftwt.pop("reports")
        for label, rep in reports.items():
            print(f"\nenergy of the {label} CNN on loihi1:")
            ftwt[f"energy_{label}"] = _print_energy(rep, rep.program, "loihi1").to_json()
        plot_report({**reports["ftwt"].to_json(), "energy": ftwt["energy_ftwt"]}, out / "ftwt_report.png")
        result["ftwt"] = ftwt
    atomic_write_json(out / "report.json", result)
    print(f"report -> {out / 'report.json'}, plots -> {out / 'report.png'}"
          + ("" if args.no_ftwt else f", {out / 'ftwt_report.png'}"))
    return 0


def _lava_check(program: Any, x: torch.Tensor) -> dict[str, Any]:
    """Run the fixed-point program on Lava and on numba with the same spikes; compare bit for bit."""
    import numpy as np

    from spike.backends import run
    from spike.workflows import encoder_of

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


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spike", description="Spiking-network simulator and compiler.")
    p.add_argument("--version", action="version", version=f"spike {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model")
    t.add_argument("model", choices=["mlp", "cnn", "spikegpt"], help="model family")
    t.add_argument("--dataset", default="digits", help="digits (built in), mnist or cifar10")
    t.add_argument("--data-root", default=None, help="folder with the MNIST/CIFAR-10 files")
    t.add_argument("--out", required=True, help="checkpoint path (written atomically)")
    t.add_argument("--epochs", type=int, default=15)
    t.add_argument("--steps", type=int, default=None,
                   help="simulation time steps per sample (mlp 16, cnn 4); with --target's synaptic delay the "
                        "model runs its latency (delay x synaptic layers) more")
    t.add_argument("--target", default=None,
                   help="train for this target (a name in hw_configs/ or a YAML path): its synaptic delay in "
                        "every synaptic layer and, on a target with cores (loihi1, loihi2), rate-coded input and "
                        "reset to zero in the step that fires, so `spike compile --target T --precision fixed` "
                        "takes the checkpoint as it is; a conflicting --encoding/--reset is an error")
    t.add_argument("--encoding", default=None, choices=["direct", "rate", "latency"],
                   help="input encoding (default direct; rate with a --target that has cores)")
    t.add_argument("--hidden", type=int, nargs="+", default=[128])
    t.add_argument("--beta", type=float, default=None, help="LIF decay (mlp 0.9, cnn 0.5)")
    t.add_argument("--reset", default=None, choices=["subtract", "zero", "none"],
                   help="neuron reset (default subtract; zero with a --target that has cores)")
    t.add_argument("--no-reset-delay", action="store_true",
                   help="reset in the step that spikes (Loihi's rule; needed for --precision fixed; implied by "
                        "a --target with cores)")
    t.add_argument("--lr", type=float, default=None, help="default 5e-3 (1e-3 for cnn --ftwt)")
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--resume", action="store_true", help="continue from --out if it exists")
    t.add_argument("--preset", default=None,
                   help="cnn: digits, mnist, digits_resnet, vgg16, resnet20, resnet56 (spike.models.cnn.model.PRESETS; "
                        "default by dataset: digits, mnist, vgg16 for cifar10)")
    t.add_argument("--ftwt", type=float, default=None, metavar="R",
                   help="cnn: train FTWT channel masks with target mass ratio R (without: the unmasked baseline)")
    t.add_argument("--init", default=None, metavar="BASELINE.pt", help="cnn: start from this baseline checkpoint")
    t.add_argument("--ftwt-mode", default="decoupled", choices=["decoupled", "joint"])
    t.add_argument("--ftwt-mass", default="spikes", choices=["spikes", "absmax"],
                   help="channel mass of the targets: spike count (default) or the paper's max |activation|")
    t.add_argument("--ftwt-window", type=int, default=0, help="steps the mask heads read (0: all)")
    t.add_argument("--head-lr", type=float, default=2e-2, help="cnn: learning rate of the mask heads")
    t.add_argument("--channel-sparsity", type=float, default=None,
                   help="cnn: weight of the channel-group spike sparsity penalty (default 0.7 for the "
                        "baseline, 0 with --ftwt)")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(fn=_cmd_train)
    from spike.cli_spikegpt import add_eval_parser, add_generate_parser, add_train_arguments

    add_train_arguments(t)  # spikegpt: --size, --data, --minutes, ... (skips options above)
    add_eval_parser(sub)
    add_generate_parser(sub)

    c = sub.add_parser("compile", help="compile a checkpoint or a NIR graph to an IR program (HDF5)")
    c.add_argument("checkpoint", help="a checkpoint from `spike train` (SpikeGPT included), or a .nir graph")
    c.add_argument("--dt", type=float, default=1e-4, help="NIR import: time step in seconds")
    c.add_argument("--reset", default=None, choices=["subtract", "zero", "none"],
                   help="NIR import: reset mode when the graph's metadata has none (default zero)")
    c.add_argument("--target", default="generic", help="a name in hw_configs/ or a YAML path")
    c.add_argument("--precision", default="float32", choices=["float32", "fixed"])
    c.add_argument("--target-delays", default="balanced", choices=["balanced", "raw"],
                   help="on a target whose synapses deliver late (Loihi): balanced (default) keeps the trained "
                        "network, with outputs some steps late; raw uses the plain target delays (a different network)")
    c.add_argument("--out", required=True)
    c.set_defaults(fn=_cmd_compile)

    e = sub.add_parser("export", help="export a checkpoint or a compiled program to NIR")
    e.add_argument("checkpoint", help="a checkpoint from `spike train` or a program .h5")
    e.add_argument("--nir", required=True, help="output .nir file")
    e.add_argument("--dt", type=float, default=None, help="time step written to the graph (default 1e-4)")
    e.set_defaults(fn=_cmd_export)

    r = sub.add_parser("run", help="run a compiled program on a dataset's (or a SpikeGPT's corpus's) test split")
    r.add_argument("program")
    r.add_argument("--backend", default="numba")
    r.add_argument("--dataset", default=None)
    r.add_argument("--data-root", default=None)
    r.add_argument("--steps", type=int, default=None, help="default: as trained")
    r.add_argument("--limit", type=int, default=None, help="only the first N test samples")
    r.add_argument("--batch-size", type=int, default=64)
    r.add_argument("--json", default=None, help="write the report here")
    r.add_argument("--target", default=None, help="energy figures from this target (default: the program's)")
    r.add_argument("--plot", default=None, help="PNG with firing rate and energy per layer")
    r.add_argument("--quiet", action="store_true")
    r.add_argument("--data", default=None, help="SpikeGPT: text file whose test split is run (default: built-in corpus)")
    r.add_argument("--tokens", type=int, default=512, help="SpikeGPT: tokens to run (default 512)")
    r.add_argument("--tokenizer", default=None, help="SpikeGPT: tokenizer JSON when the program does not carry it")
    r.set_defaults(fn=_cmd_run)

    d = sub.add_parser("demo", help="train -> compile -> run on built-in data")
    d.add_argument("--out-dir", default="runs/demo")
    d.add_argument("--epochs", type=int, default=15)
    d.add_argument("--lava-samples", type=int, default=8, help="test samples also run on Lava")
    d.add_argument("--no-ftwt", action="store_true", help="skip the FTWT CNN part")
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(fn=_cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"spike {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
