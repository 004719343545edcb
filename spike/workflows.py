"""What the command line, the tests and the benchmarks call: train an MLP, compile a checkpoint,
evaluate a compiled program on a dataset split, calibrate firing rates, and the same for SpikeGPT
(compile a checkpoint with its vocabulary, run the program over a corpus).

Evaluation encodes a split as :mod:`spike.train.evaluation` does (sample ``i`` seeded from
``(seed, i)``): :func:`evaluate_program` (``spike run``) and the final test evaluation of ``spike
train`` (:func:`spike.train.evaluation.evaluate_model`) score a compiled float program and the model
it came from on the same spikes, so they report the same accuracy (up to float rounding in the
backend).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from spike import __version__
from spike.backends import OpCounts, RunResult, run
from spike.compiler import ProgramError
from spike.compiler import compile as compile_model
from spike.compiler.ir.nodes import Gate, Input, Population
from spike.compiler.ir.precision import program_precision
from spike.compiler.ir.program import Program
from spike.encoders import Encoder
from spike.energy import EnergyReport, energy_report
from spike.hardware import load_target
from spike.losses import rate_cross_entropy
from spike.models import build_model
from spike.models.spikegpt.checkpoint import load_lm
from spike.models.spikegpt.report import SpikeGPTReport, spikegpt_report, vanilla_gpt_macs
from spike.models.spikegpt.text import TokenizerVocab, load_test_tokens, vocab_from_config
from spike.train.checkpoint import load_checkpoint, make_config, record_evaluation
from spike.train.datasets import SplitReader, load_dataset
from spike.train import distributed as dist_utils
from spike.train.distributed import is_main_process, training_device
from spike.train.evaluation import encode_on_cpu, encode_samples, encoded_batches, evaluate_model, predictions
from spike.train.trainer import Trainer, accuracy, fit_to_target, set_seed, target_needs


@dataclass
class Report:
    """What :func:`evaluate_program` measured: accuracy, operation counts (per sample) and timing."""

    accuracy: float
    num_samples: int
    steps: int
    backend: str
    ops: OpCounts
    program: Program
    timing: dict[str, float]
    distributed: dict[str, Any] | None = None  # {"world_size", "samples_per_rank"} of a sharded run

    @property
    def counted_steps(self) -> int:
        """The steps the counts cover: the input's and the program's latency steps after them."""
        return self.ops.steps if self.ops.steps is not None else self.steps

    def per_node_rows(self) -> list[dict[str, Any]]:
        """Per node: the counts, its neurons and firing rate ``spikes / (neurons x counted steps)``."""
        rows = []
        for entry in self.ops.to_json()["per_node"]:
            node = self.program.node(entry["name"])
            rate = entry["spikes"] / (node.size * self.counted_steps) if isinstance(node, Population) else None
            rows.append({**entry, "neurons": node.size if isinstance(node, Population) else 0, "firing_rate": rate})
        return rows

    def kept_channels(self) -> dict[str, float]:
        """Per FTWT-gated population: neuron updates / (neurons x counted steps), the fraction of its
        channels the gate kept (mean over samples); empty without gates."""
        keep = {}
        for name, node in self.program.nodes():
            if isinstance(node, Population) and any(isinstance(self.program.node(s), Gate)
                                                    for s in self.program.sources(name)):
                keep[name] = self.ops.node_mean(name)["neuron_updates"] / (node.size * self.counted_steps)
        return keep

    def to_run_report(self, dataset: str, energy: EnergyReport | None = None,
                      program_path: str | None = None) -> dict[str, Any]:
        """:func:`run_report` of this evaluation; an FTWT program's model section holds its kept channels."""
        keep = self.kept_channels()
        out = run_report(self.program, program_path=program_path, backend=self.backend,
                         data={"dataset": dataset, "samples": self.num_samples}, steps=self.steps,
                         ops=self.ops_json(), timing=self.timing, energy=energy, accuracy=self.accuracy,
                         model={"kind": "ftwt", "kept_channels": keep} if keep else None)
        if self.distributed is not None:
            out["distributed"] = dict(self.distributed)
        return out

    def ops_json(self) -> dict[str, Any]:
        """``{"counts_are", "total", "per_node"}`` (per-node rows with neurons and firing rate)."""
        return {"counts_are": "per sample, summed over steps (mean over samples)", "total": self.ops.total(),
                "per_node": self.per_node_rows()}

    def table(self) -> str:
        rows = self.per_node_rows()
        w = max([24, *(len(r["name"]) for r in rows)])
        head = f"{'node':<{w}} {'kind':<10} {'spikes':>10} {'rate':>7} {'syn_ops':>12} {'macs':>12} {'dense_ops':>12} {'pool_ops':>12}"
        lines = [head, "-" * len(head)]
        for r in rows:
            rate = f"{r['firing_rate']:.3f}" if r["firing_rate"] is not None else ""
            lines.append(
                f"{r['name']:<{w}} {r['kind']:<10} {r['spikes']:>10.1f} {rate:>7} {r['syn_ops']:>12.0f} "
                f"{r['macs']:>12.0f} {r['dense_ops']:>12.0f} {r.get('pool_ops', 0.0):>12.0f}"
            )
        t = self.ops.total()
        lines.append("-" * len(head))
        lines.append(
            f"{'total':<{w}} {'':<10} {t['spikes']:>10.1f} {'':>7} {t['syn_ops']:>12.0f} {t['macs']:>12.0f} {t['dense_ops']:>12.0f} {t.get('pool_ops', 0.0):>12.0f}"
        )
        lines.append(f"neuron_updates {t['neuron_updates']:.0f}, host_flops {t['host_flops']:.0f} (per sample)")
        return "\n".join(lines)


def encoder_of(program: Program, steps: int | None = None) -> Encoder:
    """The encoder a program was trained with (``metadata["encoding"]``), over ``steps`` steps when
    given; a program without one (compiled from a user's model) takes direct input and needs ``steps``."""
    enc = program.metadata.get("encoding")
    if enc is None:
        if steps is None:
            raise ValueError("the program records no input encoding (it was not compiled from a `spike train` "
                             "checkpoint): give the number of steps (steps=N, --steps N); the input is fed directly")
        enc = {"kind": "direct", "num_steps": steps, "params": {}}
    enc = dict(enc)
    if steps is not None:
        enc["num_steps"] = steps
    return Encoder.from_dict(enc)


def probe_populations(program: Program, x: torch.Tensor, backend: str = "numba", steps: int | None = None,
                      seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Spikes and membranes (``[T, B, n]``) of every population for the samples ``x``, encoded as
    :func:`evaluate_program` encodes them (sample ``i`` seeded from ``(seed, i)``)."""
    pops = [name for name, node in program.nodes() if isinstance(node, Population)]
    _, _, spikes = next(encoded_batches(encoder_of(program, steps), x, len(x), seed))
    probes = run(program, spikes, backend=backend, probes=[*pops, *(f"{p}.v" for p in pops)]).probes
    return {p: probes[p] for p in pops}, {p: probes[f"{p}.v"] for p in pops}


def evaluate_program(
    program: Program,
    x: torch.Tensor | SplitReader,
    y: torch.Tensor | None = None,
    backend: str = "numba",
    steps: int | None = None,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = True,
) -> Report:
    """Encode the samples as the program was trained, run them batch by batch, score and count.

    The samples are ``x`` with labels ``y``, or a :class:`~spike.train.datasets.SplitReader`
    (:func:`~spike.train.datasets.open_test_split`) as ``x`` alone, read a batch at a time. Sample
    ``i`` is encoded from its own seed ``(seed, i)`` (:func:`spike.train.evaluation.encode_samples`),
    so the report is a function of ``(program, samples, steps, seed)`` whatever the batch size, and
    equals the accuracy :func:`spike.train.evaluation.evaluate_model` gives the float model with the
    same seed. Under torchrun (a process group of ``W`` ranks) rank ``r`` reads and runs only the
    samples :func:`~spike.train.distributed.shard_bounds` gives it, and every rank returns the
    whole set's report: correct answers summed, counts joined in sample order, so it equals the
    one-process report exactly; ``timing`` then holds the slowest rank's ``run_s`` and
    ``distributed`` says ``{"world_size", "samples_per_rank"}``.
    """
    if isinstance(x, SplitReader):
        if y is not None:
            raise ValueError("evaluate_program: a SplitReader carries its labels; give no y")
        samples = x
    elif y is None:
        raise ValueError("evaluate_program: give the labels y of the samples x")
    else:
        samples = SplitReader.from_tensors("samples", x, y)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    encoder = encoder_of(program, steps)
    n, ranks = len(samples), dist_utils.world_size() if dist_utils.is_distributed() else 1
    first, stop = dist_utils.shard_bounds(n, dist_utils.rank(), ranks) if ranks > 1 else (0, n)
    correct, parts, run_s = 0, [], 0.0
    starts = range(first, stop, batch_size)
    bars = tqdm(starts, desc=f"run on {backend}", disable=None if progress else True, unit="batch")
    for start in bars:  # disable None: a bar on a terminal only
        end = min(start + batch_size, stop)
        xb, yb = samples.read(start, end)
        result = run(program, encode_samples(encoder, xb, start, seed), backend=backend)
        correct += int((predictions(result.output) == yb.numpy()).sum())
        parts.append(result.ops)
        run_s += result.timing["run_s"]
    ops, distributed = OpCounts.concat(parts), None
    if ranks > 1:  # every rank's part, in rank order = sample order
        shards = dist_utils.all_gather_objects((correct, ops, run_s, stop - first))
        correct = sum(c for c, _, _, _ in shards)
        ops = OpCounts.concat([o for _, o, _, k in shards if k])
        run_s = max(t for _, _, t, _ in shards)
        distributed = {"world_size": ranks, "samples_per_rank": [k for _, _, _, k in shards]}
    return Report(
        accuracy=correct / max(n, 1),
        num_samples=n,
        steps=encoder.num_steps,
        backend=backend,
        ops=ops,
        program=program,
        timing={"run_s": run_s, "ms_per_sample": 1e3 * run_s / max(n, 1)},
        distributed=distributed,
    )


def calibration_rates(program: Program, inputs: Any, backend: str = "numba") -> dict[str, np.ndarray]:
    """Per-neuron events per step of every population and input, from one run on ``inputs``: the
    firing rates ``spike.compiler.compile(..., firing_rates=)`` weights spike traffic by when it
    places a program on a target's cores."""
    names = [n for n, node in program.nodes() if isinstance(node, (Population, Input))]
    probed = run(program, inputs, backend=backend, probes=names).probes
    return {
        n: (probed[n] != 0).reshape(probed[n].shape[0], probed[n].shape[1], -1).mean(axis=(0, 1))
        for n in names
    }


# ---------------------------------------------------------------------------------------------
# checkpoints -> programs
# ---------------------------------------------------------------------------------------------


def load_model(path: str) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the model in a ``spike train`` checkpoint (eval mode); returns it with the config."""
    ckpt = load_checkpoint(path)
    cfg = ckpt["config"]
    model = build_model(cfg["model"]["kind"], **cfg["model"]["kwargs"])
    model.load_state_dict(ckpt["model_state"])
    model.eval()
    return model, cfg


def compile_checkpoint(path: str, target: str = "generic", precision: str = "float32", calibrate: int = 64,
                       target_delays: str = "balanced", data_root: str | None = None):
    """Rebuild the model in a checkpoint and compile it for ``target``.

    The encoding travels in the program's metadata. On a target with cores the program is
    partitioned and placed, weighting traffic by firing rates measured first by a run of the
    generic float program on the first ``calibrate`` training samples. The dataset's files are read
    from ``data_root`` (the caller's choice: a checkpoint never names the files that are read).
    """
    model, cfg = load_model(path)
    hw = load_target(target)
    encoder = Encoder.from_dict(cfg["encoding"])
    if not cfg.get("dataset"):
        raise ValueError(f"{path}: the checkpoint's config names no dataset, so the input shape is unknown")
    try:
        data = load_dataset(cfg["dataset"], data_root)
    except ValueError as exc:
        raise ValueError(f"{path}: trained on {cfg['dataset']}: {exc}") from None
    gen = torch.Generator().manual_seed(0)
    example = encoder(data.x_train[:1], generator=gen)
    signal = "real" if encoder.kind == "direct" else "spike"
    meta = {"model": cfg["model"]["kind"], "encoding": encoder.to_dict(), "num_steps": cfg["num_steps"],
            "dataset": cfg.get("dataset"), "source": str(path)}
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


def compile_nir(path: str, target: str, precision: str, dt: float | None, reset: str | None,
                target_delays: str = "balanced", reset_delay: bool | None = None):
    """Import a NIR graph and compile it (mapped with uniform rates on a target with cores).

    ``dt`` (seconds) is honoured over the graph's ``dt`` metadata; None takes the metadata's, else
    1e-4 (:func:`spike.compiler.frontends.nir_import.from_nir`). ``reset`` and ``reset_delay`` apply
    to neurons without such metadata (None: zero, and a reset one step late, snnTorch's). Any
    error names the file; one about a reset Loihi's fixed point cannot run names the options.
    """
    options = {"dt": dt, "reset": reset, **({} if reset_delay is None else {"reset_delay": reset_delay})}
    try:
        return compile_model(path, target=target, precision=precision, nir_options=options,
                             target_delays=target_delays)
    except ProgramError as exc:
        about_reset = precision == "fixed" and any(f"field {f}:" in str(exc) for f in ("reset", "reset_delay"))
        hint = (" (for a NIR graph: --reset zero --reset-delay no, or node metadata 'reset' and 'reset_delay')"
                if about_reset else "")
        raise ValueError(f"{path}: {exc}{hint}") from None


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


def target_energy(report: Report, program: Program, target: str) -> EnergyReport | None:
    """The energy of ``report``'s counts on ``target`` (None for a target without energy figures, e.g. 'generic')."""
    hw = load_target(target)
    if not any(path.startswith("energy.") for path in hw.figures()):
        return None
    return energy_report(report.ops, program, hw, report.steps)


# ---------------------------------------------------------------------------------------------
# train a spiking MLP
# ---------------------------------------------------------------------------------------------


def train_mlp(
    *,
    out: str,
    dataset: str = "digits",
    data_root: str | None = None,
    epochs: int = 15,
    steps: int | None = None,
    target: str | None = None,
    encoding: str | None = None,
    hidden: Sequence[int] = (128,),
    beta: float | None = None,
    reset: str | None = None,
    reset_delay: bool | None = None,
    lr: float | None = None,
    batch_size: int = 64,
    seed: int = 0,
    resume: bool = False,
    progress: bool = True,
    accumulate: int = 1,
    precision: str = "fp32",
    device: str = "cpu",
) -> dict[str, Any]:
    """``spike train mlp``; with ``target`` the choices that target needs (:func:`spike.train.trainer.fit_to_target`).

    Defaults as the command's: 16 steps, ``beta`` 0.9, ``lr`` 5e-3. The test accuracy is the test
    split encoded as ``spike run`` encodes it (:func:`spike.train.evaluation.evaluate_model`, seed
    0); the checkpoint records it (``test_accuracy``). Returns ``{"accuracy", "evaluation",
    "history", "checkpoint", "line"}`` (``line``: what ``spike train mlp`` prints).
    """
    needs = target_needs(target) if target else None
    chosen = fit_to_target(needs, encoding=encoding, reset=reset, reset_delay=reset_delay)
    set_seed(seed)
    base_steps = 16 if steps is None else steps  # the train command's defaults for an MLP
    beta = 0.9 if beta is None else beta
    lr = 5e-3 if lr is None else lr
    data = load_dataset(dataset, data_root)
    in_features = int(torch.tensor(data.input_shape).prod())
    kwargs = dict(
        in_features=in_features, num_classes=data.num_classes, hidden=list(hidden),
        beta=beta, threshold=1.0, reset=chosen["reset"], reset_delay=chosen["reset_delay"],
    )
    if chosen["synaptic_delay"]:
        kwargs["synaptic_delay"] = chosen["synaptic_delay"]
    model = build_model("mlp", **kwargs).to(training_device(device))
    steps = base_steps + model.latency  # the output trails the input by the latency
    encoder = Encoder(chosen["encoding"], steps)
    extra = {"target": needs.record()} if needs is not None else {}
    config = make_config("mlp", kwargs, encoder.to_dict(), steps, dataset, **extra)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    enc_gen = torch.Generator().manual_seed(seed)

    def forward(m: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        return m(encode_on_cpu(encoder, x, enc_gen))

    trainer = Trainer(
        model, opt, rate_cross_entropy, (data.x_train, data.y_train), epochs=epochs,
        batch_size=batch_size, seed=seed, eval_data=(data.x_test, data.y_test),
        checkpoint_path=out, scheduler=sched, forward_fn=forward,
        metric_fn=lambda out, y: accuracy(out.sum(0), y), progress=progress,
        resume=resume, config=config, generators={"encoder": enc_gen}, accumulate=accumulate,
        precision=precision,
    )
    history = trainer.fit()
    result = evaluate_model(model, encoder, data.x_test, data.y_test)
    ckpt = record_evaluation(out, result) if is_main_process() else None
    steps_text = f"{base_steps} + {model.latency} steps" if model.latency else f"{steps} steps"
    where = f", for {needs.name} ({needs.synaptic_delay}-step synaptic delay)" if needs is not None else ""
    line = (f"test accuracy {100 * result['accuracy']:.2f}% ({data.num_test} {dataset} test samples, "
            f"{steps_text}, {chosen['encoding']} encoding{where}) -> {out}")
    return {"accuracy": result["accuracy"], "evaluation": result, "history": history, "checkpoint": ckpt,
            "line": line}


# ---------------------------------------------------------------------------------------------
# SpikeGPT: compile a checkpoint, run the program over a corpus
# ---------------------------------------------------------------------------------------------

#: Vocabularies up to this size (JSON characters) travel in the program's metadata; a larger one
#: (a tokenizer) is named by its hash and given again at run time (``--tokenizer``).
_VOCAB_IN_METADATA = 32_000


def compile_lm(path, target: str = "generic", precision: str = "float32", **load_kw) -> Program:
    """Compile a SpikeGPT checkpoint (:func:`spike.models.spikegpt.checkpoint.load_lm`) to a Program;
    its vocabulary goes into the metadata (the program runs token by token: any context length)."""
    model, voc, _ = load_lm(path, recurrent_only=True, **load_kw)
    vcfg = voc.to_config()
    if len(json.dumps(vcfg)) > _VOCAB_IN_METADATA:
        vcfg = {"kind": vcfg["kind"], "sha256": vcfg.get("sha256"), "stored": False}
    return compile_model(model, target=target, precision=precision,
                         metadata={"vocab": vcfg, "source": str(path)})


def program_vocab(program: Program, tokenizer=None):
    """The vocabulary of a compiled SpikeGPT: from its metadata, or the ``tokenizer`` file (checked
    against the hash the metadata records)."""
    vcfg = program.metadata.get("vocab")
    if tokenizer is not None:
        voc = TokenizerVocab.from_file(tokenizer)
        want = (vcfg or {}).get("sha256")
        if want and voc.to_config().get("sha256") != want:
            raise ValueError(f"--tokenizer {tokenizer}: not the tokenizer the program was compiled with "
                             f"(sha256 {want[:12]}...)")
        return voc
    if not vcfg or vcfg.get("stored") is False:
        raise ValueError("the program does not carry its vocabulary; give --tokenizer FILE")
    return vocab_from_config(vcfg)


#: the version of :func:`run_report`'s layout (``docs/report.schema.json``)
REPORT_SCHEMA_VERSION = 1


def run_report(program: Program, *, program_path: str | None, backend: str, data: dict[str, Any], steps: int,
               ops: dict[str, Any], timing: dict[str, float], energy: EnergyReport | None,
               accuracy: float | None = None, bits_per_token: float | None = None,
               model: dict[str, Any] | None = None) -> dict[str, Any]:
    """The one report of ``spike run``, whatever the model (``docs/report.schema.json``): the
    program and target, backend, data (``{"dataset", "samples"}`` or ``{"tokens", "source"}``),
    steps, ``ops`` (``counts_are``, ``total``, ``per_node``), ``energy`` (None without figures),
    ``timing``, the task metric (``accuracy`` or ``bits_per_token``) and an optional ``model``
    section (``{"kind": ..., ...}``)."""
    out: dict[str, Any] = {
        "schema_version": REPORT_SCHEMA_VERSION,
        "tool": {"name": "spike", "version": __version__},
        "program": {"path": program_path, "model": program.metadata.get("model"),
                    "target": program.metadata.get("target", "generic"), "precision": program_precision(program),
                    "target_delays": program.metadata.get("target_delays")},
        "backend": backend, "data": data, "steps": int(steps), "ops": ops,
        "energy": None if energy is None else energy.to_json(), "timing": dict(timing),
    }
    if accuracy is not None:
        out["accuracy"] = accuracy
    if bits_per_token is not None:
        out["bits_per_token"] = bits_per_token
    if model is not None:
        out["model"] = model
    return out


#: the columns of :func:`report_row`, in order
REPORT_COLUMNS = ("report", "model", "target", "precision", "backend", "data", "steps", "metric", "syn_ops", "macs",
                  "energy_uj", "kept_channels")


def load_run_report(path: str) -> dict[str, Any]:
    """A ``spike run --json`` report read back: JSON, ``schema_version`` :data:`REPORT_SCHEMA_VERSION`
    and the fields :func:`report_row` reads; anything else is a ValueError naming the file and field."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a JSON report ({exc})") from None
    if not isinstance(data, dict) or data.get("schema_version") != REPORT_SCHEMA_VERSION:
        found = data.get("schema_version") if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{path}: schema_version: expected {REPORT_SCHEMA_VERSION} (a `spike run --json` "
                         f"report), found {found!r}")
    for field, kind, name in (("program", dict, "an object"), ("backend", str, "a string"), ("data", dict, "an object"),
                              ("steps", int, "an integer"), ("ops", dict, "an object")):
        if not isinstance(data.get(field), kind):
            raise ValueError(f"{path}: {field}: expected {name}, found {data.get(field)!r}")
    if not isinstance(data["ops"].get("total"), dict):
        raise ValueError(f"{path}: ops.total: expected an object of counts")
    return data


def report_row(report: dict[str, Any], name: str) -> dict[str, Any]:
    """One row of a sweep's table (:data:`REPORT_COLUMNS`) from a run report: the metric is the
    accuracy (a fraction) or bits per token, counts and energy per sample (per run for SpikeGPT, as
    the report's ``counts_are`` says), ``kept_channels`` the mean over an FTWT model's gated layers."""
    program, data, total = report["program"], report["data"], report["ops"]["total"]
    kept = (report.get("model") or {}).get("kept_channels")
    return {
        "report": name, "model": program.get("model"), "target": program.get("target"),
        "precision": program.get("precision"), "backend": report["backend"],
        "data": (f"{data['dataset']} x {data['samples']}" if "dataset" in data else f"{data.get('tokens')} tokens"),
        "steps": report["steps"],
        "metric": report.get("accuracy", report.get("bits_per_token")),
        "syn_ops": total.get("syn_ops"), "macs": total.get("macs"),
        "energy_uj": None if report.get("energy") is None else 1e6 * report["energy"]["total_j"],
        "kept_channels": None if not kept else sum(kept.values()) / len(kept),
    }


@dataclass
class LMRun:
    """What :func:`run_lm_program` measured over the first test tokens, cut into segments.

    ``report``: the :class:`SpikeGPTReport` of all segments together; ``result``: their runs as
    one (:func:`merged_lm_result`: counts summed over the segments, batch 1; no logits kept);
    ``segments``: each segment's ``[start, stop)`` in the token stream; ``distributed``:
    ``{"world_size", "samples_per_rank"}`` (segments per rank) of a sharded run, else None.
    """

    report: SpikeGPTReport
    result: RunResult
    segments: list[tuple[int, int]]
    distributed: dict[str, Any] | None = None


def lm_run_report(program: Program, lm: LMRun, *, program_path: str | None, source: str) -> dict[str, Any]:
    """:func:`run_report` of a SpikeGPT run (:func:`run_lm_program`) over ``source``; the SpikeGPT
    figures (firing by block, per-token counts three ways, energy per token) are its model
    section; ``data`` says the tokens and segments; a sharded run adds ``distributed``."""
    report, result, count = lm.report, lm.result, len(lm.segments)
    section = {k: v for k, v in report.to_json().items() if k not in ("tokens", "batch", "target", "bits_per_token")}
    stream = ("(one stream), summed over steps" if count == 1 else
              f"({count} segments, each from a fresh state), summed over steps and segments")
    ops = {"counts_are": f"the whole run of {report.tokens} tokens {stream}", **result.ops.to_json()}
    out = run_report(program, program_path=program_path, backend=result.backend,
                     data={"tokens": report.tokens, "source": source, "segments": count}, steps=report.tokens,
                     ops=ops, timing=result.timing, energy=report.energy_detail,
                     bits_per_token=report.bits_per_token, model={"kind": "spikegpt", **section})
    if lm.distributed is not None:
        out["distributed"] = dict(lm.distributed)
    return out


def lm_segments(tokens: int, segments: int) -> list[tuple[int, int]]:
    """``[start, stop)`` of each of ``segments`` contiguous pieces of a stream of ``tokens`` tokens:
    :func:`~spike.train.distributed.shard_bounds` (lengths differ by at most one, the first
    segments get the extra tokens). Each needs 2 tokens (a token and the next one it predicts)."""
    if segments < 1:
        raise ValueError(f"--segments {segments}: expected at least 1")
    if tokens < 2 * segments:
        raise ValueError(f"--segments {segments}: {tokens} tokens cut into {segments} segments leave a segment "
                         f"fewer than 2 tokens; run at least {2 * segments} tokens (--tokens) or fewer segments")
    return [dist_utils.shard_bounds(tokens, k, segments) for k in range(segments)]


def _next_token_nats(logits: np.ndarray, ids: np.ndarray) -> float:
    """Summed cross-entropy (nats, float64) of each token after the first given the logits
    ``[T, 1, V]`` of the tokens before it."""
    lg = torch.from_numpy(np.asarray(logits[:-1, 0], np.float64))
    return float(torch.nn.functional.cross_entropy(lg, torch.from_numpy(np.asarray(ids[1:], np.int64)),
                                                   reduction="sum"))


def merged_lm_result(program: Program, counts: Sequence[OpCounts], tokens: int, timing: dict[str, float],
                     backend: str) -> RunResult:
    """The runs of a stream's segments (``counts`` in segment order, each of batch 1) as one run of
    ``tokens`` steps: every count summed over the segments, ``timing`` as given. Its
    ``outputs["logits"]`` is ``[tokens, 1, 0]``: the shape :func:`spikegpt_report` reads, no values."""
    first = counts[0]
    per_node = {name: {key: np.sum([c.per_node[name][key] for c in counts], axis=0) for key in first.per_node[name]}
                for name in first.per_node}
    ops = OpCounts(per_node=per_node, kinds=dict(first.kinds), steps=tokens + program.total_latency)
    return RunResult(outputs={"logits": np.zeros((tokens, 1, 0), np.float32)}, probes={}, ops=ops,
                     timing=dict(timing), backend=backend)


def run_lm_program(program: Program, backend: str = "numba", data=None, tokens: int = 512, tokenizer=None,
                   target: str = "cmos45nm_fp32", progress: bool = False, segments: int = 1) -> LMRun:
    """Run a compiled SpikeGPT token by token on the first ``tokens`` tokens of a corpus's test
    split (the built-in corpus by default), cut into ``segments`` contiguous segments
    (:func:`lm_segments`), each run on its own from a fresh state.

    The report covers all segments exactly: counts summed, firing rates and per-token figures of
    the sums, bits per token the summed cross-entropy over every predicted token (``tokens -
    segments`` of them), the vanilla GPT's context each segment's length (per-token MACs averaged
    over the tokens). ``segments=1`` is the one stream. Under torchrun (``W`` ranks, ``segments >=
    W``) rank ``r`` builds and runs only the segments ``shard_bounds(segments, r, W)`` and every
    rank returns the report one process gives for the same ``segments`` (timing: the slowest
    rank's). No rank holds the corpus file: its test split's first tokens are read
    (:func:`~spike.models.spikegpt.text.load_test_tokens`).
    """
    voc = program_vocab(program, tokenizer)
    V = int(program.metadata["spikegpt"]["vocab_size"])
    if voc.size != V:
        raise ValueError(f"vocabulary has {voc.size} tokens, the program {V}")
    corpus_name, ids = load_test_tokens(data, voc, int(tokens))
    ids = ids.astype(np.int64)
    if len(ids) < 2:
        raise ValueError(f"the test split of {corpus_name} has {len(ids)} tokens; need at least 2")
    bounds = lm_segments(len(ids), segments)
    if segments > 1 and program.total_latency:
        raise ValueError(f"--segments {segments}: the program's outputs trail its inputs by {program.total_latency} "
                         "steps (target delays), so segment runs do not add up to one run; use --segments 1")
    ranks = dist_utils.world_size() if dist_utils.is_distributed() else 1
    if segments < ranks:
        raise ValueError(f"--segments {segments}: fewer segments than the {ranks} processes (each runs whole "
                         f"segments); give --segments {ranks} or more")
    lo, hi = dist_utils.shard_bounds(segments, dist_utils.rank(), ranks) if ranks > 1 else (0, segments)
    mine, parts = bounds[lo:hi], []
    one_bar = progress and len(mine) == 1  # one segment: a bar over its tokens; several: over the segments
    for a, b in tqdm(mine, desc=f"run on {backend}", disable=None if progress and not one_bar else True,
                     unit="segment"):
        x = np.zeros((b - a, 1, V), np.float32)
        x[np.arange(b - a), 0, ids[a:b]] = 1.0  # one spike per token on its input line
        result = run(program, x, backend=backend, progress=one_bar)
        parts.append((result.ops, _next_token_nats(result.outputs["logits"], ids[a:b]), result.timing))
    run_s, distributed = sum(t["run_s"] for _, _, t in parts), None
    if ranks > 1:  # every rank's segments, in rank order = segment order
        shards = dist_utils.all_gather_objects(parts)
        parts = [part for shard in shards for part in shard]
        run_s = max(sum(t["run_s"] for _, _, t in shard) for shard in shards)
        distributed = {"world_size": ranks, "samples_per_rank": [len(shard) for shard in shards]}
    n = len(ids)
    timing = {"run_s": run_s, "steps": float(n), "ms_per_step": 1e3 * run_s / n}
    if "latency_steps" in parts[0][2]:
        timing["latency_steps"] = parts[0][2]["latency_steps"]
    merged = merged_lm_result(program, [ops for ops, _, _ in parts], n, timing, backend)
    report = spikegpt_report(program, merged, target=target)
    squares = sum((b - a) ** 2 for a, b in bounds)  # the vanilla GPT's context, averaged over the tokens
    ctx = squares // n if squares % n == 0 else squares / n
    cfg = program.metadata["spikegpt"]
    vanilla = {"macs": vanilla_gpt_macs(int(cfg["n_layer"]), int(cfg["n_embd"]), ctx, V)}
    report = replace(report, bits_per_token=sum(nats for _, nats, _ in parts) / (n - segments) / float(np.log(2)),
                     vanilla=vanilla,
                     energy_pj={**report.energy_pj, "vanilla_gpt": vanilla["macs"] * report.figures["E_MAC_pJ"]})
    return LMRun(report=report, result=merged, segments=bounds, distributed=distributed)
