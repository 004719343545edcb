"""Train and evaluate spiking CNNs (``spike.models.cnn.model``), unmasked or with FTWT masks.

:func:`train_cnn` is what ``spike train cnn`` runs: the generic :class:`~spike.train.trainer.Trainer`
(checkpoints, exact resume) with the FTWT loss. Recipe:

- loss ``rate_cross_entropy(spikes) + channel_sparsity * R + lambda * mask_loss``. ``R`` is a
  channel-group sparsity penalty on the spikes of the conv layers: the mean over layers of
  ``mean_c sqrt(rate_c + 1e-4)`` (``rate_c``: the channel's mean spike rate in the sample, averaged
  over the batch). It makes few channels carry most of each sample's spikes, which is what FTWT's
  targets can exploit. By default (``channel_sparsity=None``) it trains the unmasked baseline
  (weight :data:`BASELINE_CHANNEL_SPARSITY`) and is off while fine-tuning with masks, so that what
  the FTWT run saves over its baseline comes from the masks (an unmasked network fine-tuned the
  same way does not get sparser);
- with ``ftwt`` (the gate settings, ``ratio`` r required): FTWT's schedule ``lambda = 1`` for the
  first half of the epochs, then 0; the heads train with Adam at ``head_lr`` (the weight at
  ``head_lr * C_in``, since softmax outputs are ~1/C_in), the backbone at ``lr``;
- ``dataset`` (default digits) and ``steps`` (default 4); ``init``: a baseline checkpoint to start
  from (its architecture, encoding, dataset and steps are used, only the heads are new; a
  ``dataset`` or ``steps`` that differs from the baseline's is a ValueError).
- ``target``: train for a hardware target (:func:`spike.train.trainer.fit_to_target`): its synaptic
  delay in every synaptic layer (``synaptic_delay``) and, on a target with cores, rate-coded input
  and reset to zero in the step that fires; ``steps`` are then the steps through the network and
  the model runs :attr:`~spike.models.cnn.model.SpikingCNN.latency` more. ``target_fit="delays"`` builds
  in only the delay (the FTWT demo: real-valued input, a float32 program). A choice that
  conflicts with the target (``encoding="direct"``, ``model_kwargs={"reset": "subtract"}``, an
  ``init`` baseline trained otherwise) is a ValueError.

The returned and printed accuracy is the test split encoded as ``spike run`` encodes it
(:func:`spike.train.evaluation.evaluate_model`, seed 0); the checkpoint records it (``test_accuracy``).

:func:`ftwt_report` measures a model in PyTorch (accuracy, per-layer keep ratio and mask accuracy,
``syn_ops``/``macs`` by :func:`~spike.models.cnn.model.count_syn_ops`); :func:`estimate_reduction` is
FTWT's "estimate before training": the target rule alone, applied to a trained unmasked network.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from spike.encoders import Encoder
from spike.ftwt import GatedConv, ftwt_loss, mask_loss_weight, oracle_masks
from spike.losses import rate_cross_entropy
from spike.models import build_model
from spike.models.cnn.model import PRESETS, count_syn_ops
from spike.train.checkpoint import load_checkpoint, make_config, record_evaluation
from spike.train.datasets import load_dataset
from spike.train.distributed import is_main_process, training_device
from spike.train.evaluation import encode_on_cpu, encoded_batches, evaluate_model
from spike.train.trainer import (SPIKE_ENCODINGS, TargetNeeds, Trainer, accuracy, fit_to_target, set_seed,
                                 target_needs)

__all__ = ["train_cnn", "load_cnn", "ftwt_report", "estimate_reduction", "channel_sparsity_penalty",
           "BASELINE_CHANNEL_SPARSITY"]

BASELINE_CHANNEL_SPARSITY = 0.7


def channel_sparsity_penalty(outputs: list[torch.Tensor]) -> torch.Tensor:
    """Mean over layers of ``mean_c sqrt(rate_c + 1e-4)`` for spikes ``[T, B, C, H, W]`` (module doc)."""
    terms = [(o.mean(dim=(0, 3, 4)) + 1e-4).sqrt().mean(dim=1).mean() for o in outputs]
    return torch.stack(terms).mean()


def load_cnn(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the CNN of a checkpoint (eval mode) and return it with the checkpoint's config."""
    ckpt = load_checkpoint(path)
    cfg = ckpt["config"]
    if cfg["model"]["kind"] != "cnn":
        raise ValueError(f"{path}: holds a {cfg['model']['kind']!r} model, not a cnn")
    model = build_model("cnn", **cfg["model"]["kwargs"])
    model.load_state_dict(ckpt["model_state"])
    return model.eval(), cfg


def _init_from(model: nn.Module, path: str | Path) -> None:
    state = load_checkpoint(path)["model_state"]
    missing, unexpected = model.load_state_dict(state, strict=False)
    bad = [k for k in missing if ".gate." not in k] + list(unexpected)
    if bad:
        raise ValueError(f"--init {path}: the checkpoint does not fit this model (e.g. {bad[:3]})")


def _same_as_baseline(init: str | Path, name: str, given: Any, baseline: Any) -> Any:
    """The ``init`` baseline's value of ``name``; an explicit one that differs is a ValueError."""
    if given is not None and baseline is not None and given != baseline:
        raise ValueError(f"--{name} {given}: the --init baseline {init} was trained with {name} {baseline}; "
                         f"leave --{name} out or give {baseline}")
    return baseline if baseline is not None else given


def train_cnn(
    *,
    out: str | Path,
    dataset: str | None = None,
    data_root: str | None = None,
    preset: str = "digits",
    model_kwargs: Mapping[str, Any] | None = None,
    steps: int | None = None,
    encoding: str | None = None,
    epochs: int = 12,
    lr: float = 5e-3,
    head_lr: float = 2e-2,
    batch_size: int = 64,
    seed: int = 0,
    ftwt: Mapping[str, Any] | None = None,
    init: str | Path | None = None,
    channel_sparsity: float | None = None,
    resume: bool = False,
    progress: bool = True,
    accumulate: int = 1,
    precision: str = "fp32",
    device: str = "cpu",
    data: Any = None,
    target: str | None = None,
    target_fit: str = "all",
) -> dict[str, Any]:
    """Train a spiking CNN and write its checkpoint to ``out``; see the module docstring.

    Returns ``{"accuracy", "evaluation", "history", "model" (eval mode), "config", "checkpoint"
    (the path)}``. ``data`` (a :class:`spike.train.datasets.Dataset`) skips loading ``dataset``.
    ``precision``: ``"fp32"`` or ``"bf16"`` (:class:`~spike.train.trainer.Trainer`); ``device``:
    ``cpu``, ``cuda`` or ``cuda:N`` (the input is encoded on the CPU either way). Under torchrun
    ``batch_size`` is the global batch; the mask heads' gradients (from the mask loss, which reads
    their logits beside the output, and none once its weight is 0) are averaged over ranks by the
    Trainer (``side_parameters``).
    """
    if target_fit not in ("all", "delays"):
        raise ValueError(f"target_fit must be 'all' or 'delays', got {target_fit!r}")
    needs = target_needs(target) if target else None
    if needs is not None and target_fit == "delays":
        needs = dataclasses.replace(needs, spike_input=False, reset=None, reset_delay=None)
    overrides = dict(model_kwargs or {})
    set_seed(seed)
    if init is not None:
        base_cfg = load_checkpoint(init)["config"]
        if base_cfg["model"]["kind"] != "cnn":
            raise ValueError(f"--init {init}: holds a {base_cfg['model']['kind']!r} model, not a cnn")
        kwargs = {k: v for k, v in base_cfg["model"]["kwargs"].items() if k != "ftwt"}
        encoder = Encoder.from_dict(base_cfg["encoding"])
        steps = _same_as_baseline(init, "steps", steps, int(base_cfg["num_steps"]))
        dataset = _same_as_baseline(init, "dataset", dataset, base_cfg.get("dataset"))
        base_target = base_cfg.get("target")
        if needs is None and base_target:
            needs = TargetNeeds(**{f.name: base_target.get(f.name) for f in dataclasses.fields(TargetNeeds)})
        elif needs is not None:
            _check_init_fits(init, base_cfg, needs)
        if needs is not None:  # what the fine-tuning overrides must still fit
            fit_to_target(needs, encoding=encoding, reset=overrides.get("reset"),
                          reset_delay=overrides.get("reset_delay"))
            _check_delay(needs, overrides)
    else:
        steps = 4 if steps is None else steps
        dataset = dataset or "digits"
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; known: {sorted(PRESETS)}")
        kwargs = {"preset": preset, **PRESETS[preset]}  # spelled out: checkpoints outlive preset changes
        chosen = fit_to_target(needs, encoding=encoding, reset=overrides.get("reset"),
                               reset_delay=overrides.get("reset_delay"))
        if needs is not None:
            _check_delay(needs, overrides)
            if needs.reset is not None:
                kwargs.update(reset=chosen["reset"], reset_delay=chosen["reset_delay"])
            kwargs["synaptic_delay"] = chosen["synaptic_delay"]
        encoding = chosen["encoding"]
    kwargs.update(overrides)
    if data is None:
        data = load_dataset(dataset, data_root)
    if tuple(data.input_shape) != (kwargs.get("in_channels") or _preset_field(kwargs, "in_channels"),
                                   *(2 * [kwargs.get("input_size") or _preset_field(kwargs, "input_size")])):
        raise ValueError(f"the {dataset} images are {tuple(data.input_shape)}; the model expects "
                         f"{_preset_field(kwargs, 'in_channels')} x {_preset_field(kwargs, 'input_size')}^2 "
                         "(pick a preset that fits, e.g. digits for digits, vgg16/resnet20 for cifar10)")
    if channel_sparsity is None:
        channel_sparsity = 0.0 if ftwt is not None else BASELINE_CHANNEL_SPARSITY
    if ftwt is not None:
        gate = dict(ftwt)
        if "ratio" not in gate:
            raise ValueError("ftwt: the target ratio r ('ratio') is required")
        kwargs["ftwt"] = gate
    model = build_model("cnn", **kwargs)
    if init is not None:
        _init_from(model, init)
    model.to(training_device(device))
    if init is None:
        steps = int(steps) + model.latency  # the output trails the input by the latency
        encoder = Encoder(encoding, steps)

    heads = [m.gate for m in model.modules() if isinstance(m, GatedConv) and m.gate is not None]
    head_ids = {id(p) for g in heads for p in g.parameters()}
    groups = [{"params": [p for p in model.parameters() if id(p) not in head_ids], "lr": lr}]
    for g in heads:
        groups.append({"params": [g.weight], "lr": head_lr * g.in_channels})
        groups.append({"params": [g.bias], "lr": head_lr})
    opt = torch.optim.Adam(groups)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs, 1))
    enc_gen = torch.Generator().manual_seed(seed)
    layer_out: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda m, a, o: layer_out.append(o) if m.training else None)
             for m in model.modules() if isinstance(m, GatedConv)]
    state = {"epoch": 0}

    def forward(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
        layer_out.clear()
        return m(encode_on_cpu(encoder, x, enc_gen))

    def loss_fn(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = rate_cross_entropy(out, y)
        if channel_sparsity and layer_out:
            loss = loss + channel_sparsity * channel_sparsity_penalty(layer_out)
        if heads:
            loss, _ = ftwt_loss(model, loss, mask_loss_weight(state["epoch"], epochs))
        return loss

    def on_epoch_end(epoch: int, stats: dict[str, float]) -> None:
        state["epoch"] = epoch + 1

    extra = {"target": needs.record()} if needs is not None else {}
    config = make_config(
        "cnn", kwargs, encoder.to_dict(), steps, dataset,
        training={"epochs": epochs, "lr": lr, "head_lr": head_lr, "batch_size": batch_size, "seed": seed,
                  "channel_sparsity": channel_sparsity, "init": None if init is None else str(init)},
        **extra,
    )
    trainer = Trainer(
        model, opt, loss_fn, (data.x_train, data.y_train), epochs=epochs, batch_size=batch_size, seed=seed,
        eval_data=(data.x_test, data.y_test), checkpoint_path=out, scheduler=sched, forward_fn=forward,
        metric_fn=lambda o, y: accuracy(o.sum(0), y), progress=progress, resume=resume, config=config,
        may_extend=("training.epochs",), accumulate=accumulate, precision=precision,
        generators={"encoder": enc_gen}, on_epoch_end=on_epoch_end,
        side_parameters=[p for g in heads for p in g.parameters()],
    )
    state["epoch"] = trainer.start_epoch
    try:
        history = trainer.fit()
    finally:
        for h in hooks:
            h.remove()
    result = evaluate_model(model, encoder, data.x_test, data.y_test)
    if is_main_process():
        record_evaluation(out, result)
    model.eval()
    return {"accuracy": result["accuracy"], "evaluation": result, "history": history, "model": model,
            "config": config, "checkpoint": Path(out)}


def _check_delay(needs: Any, overrides: Mapping[str, Any]) -> None:
    if "synaptic_delay" in overrides and int(overrides["synaptic_delay"]) != needs.synaptic_delay:
        raise ValueError(f"synaptic_delay={overrides['synaptic_delay']} conflicts with --target {needs.name}: "
                         f"its synapses deliver {needs.synaptic_delay} step(s) late (synaptic_delay="
                         f"{needs.synaptic_delay}), or leave synaptic_delay out")


def _check_init_fits(init: str | Path, base_cfg: Mapping[str, Any], needs: Any) -> None:
    """``--init`` with ``--target``: the baseline must have been trained for what the target needs."""
    kw = base_cfg["model"]["kwargs"]
    got = {"synaptic_delay": int(kw.get("synaptic_delay", 0)), "reset": kw.get("reset", "subtract"),
           "reset_delay": bool(kw.get("reset_delay", True)), "encoding": base_cfg["encoding"]["kind"]}
    want = {"synaptic_delay": needs.synaptic_delay}
    if needs.reset is not None:
        want["reset"] = needs.reset
    if needs.reset_delay is not None:
        want["reset_delay"] = needs.reset_delay
    bad = [f"{k} {got[k]!r} (needs {v!r})" for k, v in want.items() if got[k] != v]
    if needs.spike_input and got["encoding"] not in SPIKE_ENCODINGS:
        bad.append(f"encoding {got['encoding']!r} (needs rate or latency)")
    if bad:
        raise ValueError(f"--init {init} was not trained for --target {needs.name}: " + ", ".join(bad)
                         + f"; train the baseline with --target {needs.name}")


def _preset_field(kwargs: Mapping[str, Any], key: str) -> Any:
    preset = kwargs.get("preset", "digits")
    return PRESETS.get(preset, {}).get(key) if preset is not None else None


@torch.no_grad()
def ftwt_report(model: nn.Module, x: torch.Tensor, y: torch.Tensor, encoder: Any, batch_size: int = 512) -> dict[str, Any]:
    """PyTorch-side figures of ``model`` on ``(x, y)``: ``accuracy``, ``keep`` (per gated layer, mean
    fraction of channels kept), ``mask_accuracy`` (per gated layer, mask == targets over samples and
    channels), ``syn_ops``/``macs`` per sample (:func:`~spike.models.cnn.model.count_syn_ops`)."""
    model.eval()
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, GatedConv)]
    correct, n = 0, 0
    keep = {name: 0.0 for name, _ in layers}
    hits = {name: 0.0 for name, _ in layers}
    syn = macs = 0.0
    for start, stop, spikes in encoded_batches(encoder, x, batch_size, seed=0):  # as ``spike run`` encodes
        xb, yb = x[start:stop], y[start:stop]
        counted = count_syn_ops(model, spikes)
        correct += int((counted["output"].sum(0).argmax(1) == yb).sum())
        syn += float(counted["syn_ops"].sum())
        macs += float(counted["macs"].sum())
        for name, m in layers:
            st = m.stats
            if st is not None:
                keep[name] += float(st.mask.mean(1).sum())
                hits[name] += float((st.mask == st.targets).float().mean(1).sum())
        n += len(xb)
    gated = [name for name, m in layers if m.gate is not None or m.oracle_ratio is not None]
    return {
        "accuracy": correct / max(n, 1),
        "keep": {k: keep[k] / n for k in gated},
        "mask_accuracy": {k: hits[k] / n for k in gated},
        "syn_ops": syn / n,
        "macs": macs / n,
        "num_samples": n,
    }


@torch.no_grad()
def estimate_reduction(model: nn.Module, x: torch.Tensor, y: torch.Tensor, encoder: Any, ratio: float,
                       mass: str = "spikes") -> dict[str, Any]:
    """FTWT's "estimate before training": the expected reduction in synaptic operations of the trained
    unmasked ``model`` if every conv layer kept exactly its targets at ``ratio`` (each layer's mask
    from its own unmasked output given its masked input). Returns ``syn_ops`` without and with the
    target masks, the predicted ``reduction``, the accuracy with the target masks and the keep ratios."""
    plain = ftwt_report(model, x, y, encoder)
    with oracle_masks(model, ratio, mass):
        masked = ftwt_report(model, x, y, encoder)
    return {
        "ratio": ratio,
        "syn_ops_unmasked": plain["syn_ops"],
        "syn_ops_predicted": masked["syn_ops"],
        "reduction": 1.0 - masked["syn_ops"] / plain["syn_ops"] if plain["syn_ops"] else 0.0,
        "accuracy_with_targets": masked["accuracy"],
        "keep": masked["keep"],
    }
