"""Train and evaluate spiking CNNs (``spike.models.cnn``), unmasked or with FTWT masks.

:func:`train_cnn` is what ``spike train cnn`` runs: the generic :class:`~spike.training.Trainer`
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
- ``init``: a baseline checkpoint to start from (its architecture, encoding and steps are used;
  only the heads are new).

:func:`ftwt_report` measures a model in PyTorch (accuracy, per-layer keep ratio and mask accuracy,
``syn_ops``/``macs`` by :func:`~spike.models.cnn.count_syn_ops`); :func:`estimate_reduction` is
FTWT's "estimate before training": the target rule alone, applied to a trained unmasked network.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from spike.ftwt import GatedConv, ftwt_loss, mask_loss_weight, oracle_masks

__all__ = ["train_cnn", "load_cnn", "ftwt_report", "estimate_reduction", "channel_sparsity_penalty",
           "BASELINE_CHANNEL_SPARSITY"]

BASELINE_CHANNEL_SPARSITY = 0.7


def channel_sparsity_penalty(outputs: list[torch.Tensor]) -> torch.Tensor:
    """Mean over layers of ``mean_c sqrt(rate_c + 1e-4)`` for spikes ``[T, B, C, H, W]`` (module doc)."""
    terms = [(o.mean(dim=(0, 3, 4)) + 1e-4).sqrt().mean(dim=1).mean() for o in outputs]
    return torch.stack(terms).mean()


def load_cnn(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the CNN of a checkpoint (eval mode) and return it with the checkpoint's config."""
    from spike.checkpoint import load_checkpoint
    from spike.models import build_model

    ckpt = load_checkpoint(path)
    cfg = ckpt["config"]
    if cfg["model"]["kind"] != "cnn":
        raise ValueError(f"{path}: holds a {cfg['model']['kind']!r} model, not a cnn")
    model = build_model("cnn", **cfg["model"]["kwargs"])
    model.load_state_dict(ckpt["model_state"])
    return model.eval(), cfg


def _init_from(model: nn.Module, path: str | Path) -> None:
    from spike.checkpoint import load_checkpoint

    state = load_checkpoint(path)["model_state"]
    missing, unexpected = model.load_state_dict(state, strict=False)
    bad = [k for k in missing if ".gate." not in k] + list(unexpected)
    if bad:
        raise ValueError(f"--init {path}: the checkpoint does not fit this model (e.g. {bad[:3]})")


def train_cnn(
    *,
    out: str | Path,
    dataset: str = "digits",
    data_root: str | None = None,
    preset: str = "digits",
    model_kwargs: Mapping[str, Any] | None = None,
    steps: int = 4,
    encoding: str = "direct",
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
    data: Any = None,
) -> dict[str, Any]:
    """Train a spiking CNN and write its checkpoint to ``out``; see the module docstring.

    Returns ``{"accuracy", "history", "model" (eval mode), "config", "checkpoint" (the path)}``.
    ``data`` (a :class:`spike.data.Dataset`) skips loading ``dataset``.
    """
    from spike.checkpoint import load_checkpoint, make_config
    from spike.data import load_dataset
    from spike.encoders import Encoder
    from spike.losses import rate_cross_entropy
    from spike.models import build_model
    from spike.training import Trainer, accuracy, set_seed

    set_seed(seed)
    if init is not None:
        base_cfg = load_checkpoint(init)["config"]
        if base_cfg["model"]["kind"] != "cnn":
            raise ValueError(f"--init {init}: holds a {base_cfg['model']['kind']!r} model, not a cnn")
        kwargs = {k: v for k, v in base_cfg["model"]["kwargs"].items() if k != "ftwt"}
        encoder = Encoder.from_dict(base_cfg["encoding"])
        steps = int(base_cfg["num_steps"])
        dataset = base_cfg.get("dataset") or dataset
    else:
        from spike.models.cnn import PRESETS

        encoder = Encoder(encoding, steps)
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; known: {sorted(PRESETS)}")
        kwargs = {"preset": preset, **PRESETS[preset]}  # spelled out: checkpoints outlive preset changes
    kwargs.update(dict(model_kwargs or {}))
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
        return m(encoder(x, generator=enc_gen))

    def loss_fn(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = rate_cross_entropy(out, y)
        if channel_sparsity and layer_out:
            loss = loss + channel_sparsity * channel_sparsity_penalty(layer_out)
        if heads:
            loss, _ = ftwt_loss(model, loss, mask_loss_weight(state["epoch"], epochs))
        return loss

    def on_epoch_end(epoch: int, stats: dict[str, float]) -> None:
        state["epoch"] = epoch + 1

    config = make_config(
        "cnn", kwargs, encoder.to_dict(), steps, dataset,
        training={"epochs": epochs, "lr": lr, "head_lr": head_lr, "batch_size": batch_size, "seed": seed,
                  "channel_sparsity": channel_sparsity, "init": None if init is None else str(init)},
    )
    trainer = Trainer(
        model, opt, loss_fn, (data.x_train, data.y_train), epochs=epochs, batch_size=batch_size, seed=seed,
        eval_data=(data.x_test, data.y_test), checkpoint_path=out, scheduler=sched, forward_fn=forward,
        metric_fn=lambda o, y: accuracy(o.sum(0), y), progress=progress, resume=resume, config=config,
        generators={"encoder": enc_gen}, on_epoch_end=on_epoch_end,
    )
    state["epoch"] = trainer.start_epoch
    try:
        history = trainer.fit()
        acc = trainer.evaluate((data.x_test, data.y_test))["acc"]
    finally:
        for h in hooks:
            h.remove()
    model.eval()
    return {"accuracy": acc, "history": history, "model": model, "config": config, "checkpoint": Path(out)}


def _preset_field(kwargs: Mapping[str, Any], key: str) -> Any:
    from spike.models.cnn import PRESETS

    preset = kwargs.get("preset", "digits")
    return PRESETS.get(preset, {}).get(key) if preset is not None else None


@torch.no_grad()
def ftwt_report(model: nn.Module, x: torch.Tensor, y: torch.Tensor, encoder: Any, batch_size: int = 512) -> dict[str, Any]:
    """PyTorch-side figures of ``model`` on ``(x, y)``: ``accuracy``, ``keep`` (per gated layer, mean
    fraction of channels kept), ``mask_accuracy`` (per gated layer, mask == targets over samples and
    channels), ``syn_ops``/``macs`` per sample (:func:`~spike.models.cnn.count_syn_ops`)."""
    from spike.models.cnn import count_syn_ops

    model.eval()
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, GatedConv)]
    correct, n = 0, 0
    keep = {name: 0.0 for name, _ in layers}
    hits = {name: 0.0 for name, _ in layers}
    syn = macs = 0.0
    gen = torch.Generator().manual_seed(0)
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        counted = count_syn_ops(model, encoder(xb, generator=gen))
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
