"""A generic, resumable training loop (any ``nn.Module`` + loss), single-process or under torchrun.

Determinism contract: the order of samples in epoch ``e`` comes only from a ``torch.Generator``
seeded with ``seed + e``, and checkpoints hold the model, optimizer, scheduler, epoch, step and
every RNG state (every rank's, under torchrun). Checkpoints are written at epoch ends, where no
micro-batch is pending. A run stopped after any checkpoint and resumed with ``resume=True`` (with
the same number of ranks) therefore sees exactly the same batches and random draws (e.g. dropout
masks, rate-coded inputs) as an uninterrupted run and ends with bit-identical weights.

Data-parallel: when launched by torchrun, :meth:`Trainer.fit` creates a process group (NCCL for a
model on CUDA, one GPU per rank; gloo on CPU: :func:`spike.train.distributed.default_backend`),
wraps the model in DistributedDataParallel and gives each rank a contiguous slice of every global
batch (see :func:`spike.train.distributed.shard_bounds`): ``batch_size`` is the global batch, each
of ``W`` ranks computes about ``batch_size / W`` samples of it. Each rank's mean loss is rescaled by
``local_n * world / global_n`` so that DDP's gradient average equals the gradient of the mean loss
over the whole global batch, even when the slices differ in size, and BatchNorm layers normalise
by the global batch's statistics (:func:`spike.train.distributed.global_batch_norm`): a step is the
one-process step on the same batch (to float rounding), so the learning rate needs no scaling with
the number of ranks. Only rank 0 writes checkpoints and shows progress bars; the group is
destroyed when ``fit`` ends.

Precision: ``precision="bf16"`` runs the forward pass and the loss under ``torch.autocast`` with
bfloat16 on the model's device type (matrix products and convolutions in bfloat16); weights,
gradients and optimizer state stay float32, and the fused neuron and WKV kernels compute their
state in float32. ``"fp32"`` (default) is plain float32. The checkpoint records it
(``config["trainer"]["precision"]``); resuming with another precision is refused.
"""
from __future__ import annotations

import contextlib
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, default_collate
from tqdm.auto import tqdm

from spike.train import distributed as dist_utils
from spike.hardware import load_target
from spike.train.checkpoint import (
    CheckpointError,
    get_rng_state,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
)

__all__ = ["set_seed", "accuracy", "Trainer", "TargetNeeds", "target_needs", "fit_to_target", "PRECISIONS"]

#: ``Trainer(precision=...)`` / ``spike train --precision``: float32, or bfloat16 autocast.
PRECISIONS = ("fp32", "bf16")

Batch = Any
#: A data source: tensors sharing their first dimension (e.g. ``(x, y)``), a map-style Dataset,
#: or a callable ``(epoch, generator) -> iterable of batches`` (generator is None for evaluation).
DataSource = Sequence[torch.Tensor] | Dataset | Callable[[int, torch.Generator | None], Iterable[Batch]]


def set_seed(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy's global RNG and python's ``random``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def accuracy(output: torch.Tensor, target: torch.Tensor) -> float:
    """Fraction of rows whose argmax over the last dimension equals ``target``."""
    return (output.argmax(dim=-1) == target).float().mean().item()


# ---------------------------------------------------------------------- training for a target


@dataclass(frozen=True)
class TargetNeeds:
    """What a model must be trained with to run on a target as trained (``spike train --target``).

    ``synaptic_delay``: steps every synaptic layer is delayed (``spike.layers.Delayed``);
    ``spike_input``: the target's cores take spikes (a rate or latency encoding, never direct);
    ``reset`` / ``reset_delay``: the neurons' reset rule (Loihi: to zero, in the step that fires),
    None where the target leaves it free. Firing is always on ``v > threshold`` (the models'
    default), as Loihi fires.
    """

    name: str
    synaptic_delay: int
    spike_input: bool
    reset: str | None
    reset_delay: bool | None

    def record(self) -> dict[str, Any]:
        """The checkpoint's ``config["target"]``: plain values the compiler can read."""
        return {"name": self.name, "synaptic_delay": self.synaptic_delay, "spike_input": self.spike_input,
                "reset": self.reset, "reset_delay": self.reset_delay}


def target_needs(target: str) -> TargetNeeds:
    """The training choices target ``target`` (a name in ``hw_configs/`` or a YAML path) needs.

    A target with neuromorphic cores (loihi1, loihi2, truenorth) takes spikes and resets its
    neurons to zero in the step they fire (Loihi's fixed point; ``spike compile --precision
    fixed`` refuses anything else); every target adds its synaptic delay. A host target
    (generic, cmos45nm_*) needs nothing beyond its delay (0).
    """
    hw = load_target(target)
    cores = bool(hw.has_cores)
    return TargetNeeds(name=hw.name, synaptic_delay=hw.synaptic_delay, spike_input=cores,
                       reset="zero" if cores else None, reset_delay=False if cores else None)


SPIKE_ENCODINGS = ("rate", "latency")


def fit_to_target(
    needs: TargetNeeds | None,
    *,
    encoding: str | None,
    reset: str | None,
    reset_delay: bool | None,
    defaults: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Resolve ``encoding``, ``reset``, ``reset_delay`` and ``synaptic_delay`` for a training run.

    ``None`` means "not given": the target's need where it has one (rate encoding, reset
    ``zero``, ``reset_delay`` False), else ``defaults`` (without a target: today's ``direct``,
    ``subtract``, True). A value the user gave that the target cannot run raises ValueError
    naming the option and what the target needs; nothing is silently replaced.
    """
    base = {"encoding": "direct", "reset": "subtract", "reset_delay": True, **dict(defaults or {})}
    if needs is None:
        return {"encoding": encoding or base["encoding"], "reset": reset or base["reset"],
                "reset_delay": base["reset_delay"] if reset_delay is None else bool(reset_delay),
                "synaptic_delay": 0}
    where = f"--target {needs.name}"
    if needs.spike_input:
        if encoding is not None and encoding not in SPIKE_ENCODINGS:
            raise ValueError(f"--encoding {encoding} conflicts with {where}: its cores take spikes; "
                             f"train with --encoding rate (or latency), or leave --encoding out")
        encoding = encoding or "rate"
    else:
        encoding = encoding or base["encoding"]
    if needs.reset is not None:
        if reset is not None and reset != needs.reset:
            raise ValueError(f"--reset {reset} conflicts with {where}: its neurons reset to {needs.reset} "
                             f"in the step they fire; train with --reset {needs.reset}, or leave --reset out")
        reset = needs.reset
    else:
        reset = reset or base["reset"]
    if needs.reset_delay is not None:
        if reset_delay is not None and bool(reset_delay) != needs.reset_delay:
            raise ValueError(f"reset_delay={bool(reset_delay)} conflicts with {where}: its neurons reset in the "
                             f"step they fire (--no-reset-delay, reset_delay=False)")
        reset_delay = needs.reset_delay
    elif reset_delay is None:
        reset_delay = base["reset_delay"]
    return {"encoding": encoding, "reset": reset, "reset_delay": bool(reset_delay),
            "synaptic_delay": needs.synaptic_delay}



def epoch_line(stats: Mapping[str, float], epochs: int) -> str:
    """One plain log line of an epoch's history entry: ``epoch 3/15 loss 0.4321 accuracy 0.8812
    eval_loss ... lr 0.00488 time 2.1 s``."""
    parts = [f"epoch {int(stats['epoch'])}/{epochs}"]
    for key, value in stats.items():
        if key == "epoch":
            continue
        if key == "time_s":
            parts.append(f"time {value:.1f} s")
        else:
            parts.append(f"{key} {value:.4g}")
    return " ".join(parts)


def config_differences(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two configs (nested dicts compared key by key); a
    key ``old`` lacks (a checkpoint from before the key existed) is not a difference."""
    keys = []
    for key, value in new.items():
        if key not in old:
            continue
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and isinstance(old[key], Mapping):
            keys += config_differences(old[key], value, dotted + ".")
        elif old[key] != value:
            keys.append(dotted)
    return keys


def _lookup(config: Mapping[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        config = config[part]
    return config


class Trainer:
    """Train ``model`` for ``epochs`` epochs; checkpoint, resume and run data-parallel.

    Args:
        model: any module; ``forward_fn(model, x)`` (default ``model(x)``) gives its output.
        optimizer, loss_fn: ``loss_fn(output, y)`` must return the *mean* loss over the batch.
        train_data: a :data:`DataSource`; batches are ``(x, y)`` pairs.
        epochs, batch_size: total epochs and *global* batch size (split over ranks: each of ``W``
            ranks takes a contiguous slice of about ``batch_size / W`` samples of every batch).
        seed: data order of epoch ``e`` is ``randperm`` from a generator seeded ``seed + e``.
        eval_data: optional :data:`DataSource` evaluated (in order, no grad) after every epoch.
        checkpoint_path: where to write checkpoints (atomically); None disables them.
        checkpoint_every: write every this many epochs (and always after the last one).
        scheduler: optional LR scheduler, stepped per epoch or per step (``scheduler_interval``).
        forward_fn: ``(model, x) -> output``; it receives the DDP-wrapped model when distributed,
            so it must call the model it is given (e.g. ``lambda m, x: m(encode(x))``).
        metric_fn: ``(output, y) -> float`` batch mean (e.g. :func:`accuracy`), logged as ``metric_name``.
        progress: show a tqdm bar per epoch on a terminal, or else one plain line per epoch on
            stderr (:func:`epoch_line`), rank 0 only.
        resume: if ``checkpoint_path`` exists, restore everything from it and continue with the
            next epoch; if it does not exist, start from scratch. The checkpoint's config must equal
            ``config`` (and its batch size and seed these) except for the keys in ``may_extend``:
            anything else differing is a :class:`CheckpointError` naming the keys, since a resumed
            run would mix two configurations.
        config: plain dict stored in every checkpoint (see :func:`spike.train.checkpoint.make_config`).
        may_extend: dotted config keys a resumed run may change (e.g. ``"training.epochs"``).
        on_epoch_end: ``(epoch_index, epoch_metrics)`` called after the epoch's checkpoint is written.
        generators: other named ``torch.Generator``s the run draws from (e.g. an encoder's);
            their states are checkpointed and restored on resume like the global RNGs.
        drop_last: drop the last incomplete batch.
        device: where batches go; default the device of the model's first parameter.
        accumulate: split each rank's slice of a batch into this many micro-batches (consecutive,
            sizes differing by at most one), run forward and backward on each and step once: the
            gradient is that of the whole batch's mean loss (each micro-batch's mean weighted by its
            share), in ``accumulate`` times less activation memory; DDP syncs on the last one only.
            (BatchNorm normalises each micro-batch by its own statistics, as a smaller batch would.)
        precision: ``"fp32"`` or ``"bf16"`` (forward and loss under bfloat16 autocast; see the
            module docstring); recorded in the checkpoint's ``config["trainer"]``.
        side_parameters: parameters whose gradient does not come through the model's output but
            from a loss term read beside it (FTWT mask heads: ``loss_fn`` reads their logits from
            the layers), so DDP cannot track them; under torchrun the Trainer averages their
            gradients over ranks before each step (:func:`~spike.train.distributed.average_gradients`).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_fn: Callable[[Any, Any], torch.Tensor],
        train_data: DataSource,
        *,
        epochs: int,
        batch_size: int,
        seed: int = 0,
        eval_data: DataSource | None = None,
        eval_batch_size: int | None = None,
        checkpoint_path: str | Path | None = None,
        checkpoint_every: int = 1,
        scheduler: Any | None = None,
        scheduler_interval: str = "epoch",
        forward_fn: Callable[[nn.Module, Any], Any] | None = None,
        metric_fn: Callable[[Any, Any], float] | None = None,
        metric_name: str = "acc",
        progress: bool = True,
        resume: bool = False,
        config: Mapping[str, Any] | None = None,
        may_extend: Sequence[str] = (),
        on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
        generators: Mapping[str, torch.Generator] | None = None,
        drop_last: bool = False,
        device: torch.device | str | None = None,
        accumulate: int = 1,
        precision: str = "fp32",
        side_parameters: Sequence[nn.Parameter] = (),
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision (--precision) must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {epochs}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if accumulate < 1:
            raise ValueError(f"accumulate must be >= 1 micro-batch, got {accumulate}")
        self.accumulate = int(accumulate)
        if checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be >= 1 epoch, got {checkpoint_every}")
        if scheduler_interval not in ("epoch", "step"):
            raise ValueError(f"scheduler_interval must be 'epoch' or 'step', got {scheduler_interval!r}")
        self.model = model
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.train_data = train_data
        self.eval_data = eval_data
        self.epochs = int(epochs)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.seed = int(seed)
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path is not None else None
        self.checkpoint_every = int(checkpoint_every)
        self.scheduler = scheduler
        self.scheduler_interval = scheduler_interval
        self.forward_fn = forward_fn
        self.metric_fn = metric_fn
        self.metric_name = metric_name
        self.progress = progress
        self.precision = precision
        self.side_parameters = list(side_parameters)
        self.config: dict[str, Any] = {**dict(config or {}), "trainer": {
            "batch_size": self.batch_size, "seed": self.seed, "precision": self.precision}}
        self.may_extend = frozenset(may_extend) | {"evaluation"}
        self.on_epoch_end = on_epoch_end
        self.generators: dict[str, torch.Generator] = dict(generators or {})
        self.drop_last = drop_last
        if device is None:
            param = next(model.parameters(), None)
            device = param.device if param is not None else torch.device("cpu")
        self.device = torch.device(device)
        _check_source(train_data, "train_data")
        if eval_data is not None:
            _check_source(eval_data, "eval_data")

        self.start_epoch = 0
        self.step = 0
        self.history: dict[str, list[float]] = {}
        self.resumed_from: Path | None = None
        self._data_generator = torch.Generator()
        if resume:
            if self.checkpoint_path is None:
                raise ValueError("resume=True needs a checkpoint_path")
            if self.checkpoint_path.exists():
                self._restore(load_checkpoint(self.checkpoint_path))
                self.resumed_from = self.checkpoint_path

    # ------------------------------------------------------------------ checkpoints

    def _restore(self, ckpt: dict[str, Any]) -> None:
        path = self.checkpoint_path
        changed = [key for key in config_differences(ckpt["config"], self.config) if key not in self.may_extend]
        if changed:
            old, new = (", ".join(f"{k}={_lookup(c, k)!r}" for k in changed) for c in (ckpt["config"], self.config))
            raise CheckpointError(f"{path}: resuming with a different configuration ({new}; the checkpoint has "
                                  f"{old}): resume with the options that wrote it, or train into another --out")
        try:
            self.model.load_state_dict(ckpt["model_state"])
        except RuntimeError as exc:
            raise CheckpointError(f"{path}: model state does not fit this model: {exc}") from exc
        if ckpt["optimizer_state"] is not None:
            self.optimizer.load_state_dict(ckpt["optimizer_state"])
        if self.scheduler is not None:
            if ckpt["scheduler_state"] is None:
                raise CheckpointError(f"{path}: a scheduler was given but the checkpoint has none")
            self.scheduler.load_state_dict(ckpt["scheduler_state"])
        rng = ckpt["rng_state"]
        ranks = rng.get("ranks") or []
        if len(ranks) == dist_utils.world_size() > 1:  # this rank's own states (same world size)
            rng = ranks[dist_utils.rank()]
        try:
            set_rng_state(rng, self._data_generator, self.generators)
        except KeyError as exc:
            raise CheckpointError(f"{path}: {exc.args[0]}") from exc
        self.start_epoch = ckpt["epoch"]
        self.step = ckpt["step"]
        self.history = {k: list(v) for k, v in ckpt["metrics"].get("history", {}).items()}

    def save(self, epochs_done: int) -> Path | None:
        """Write a checkpoint for ``epochs_done`` completed epochs (rank 0 writes; every rank must
        call it, since it gathers every rank's RNG states: ``rng_state`` is rank 0's, with
        ``rng_state["ranks"]`` the list of all ranks' when there are several)."""
        if self.checkpoint_path is None:
            return None
        own = get_rng_state(self._data_generator, self.generators)
        states = dist_utils.all_gather_objects(own)
        if not dist_utils.is_main_process():
            return None
        rng_state = {**states[0], "ranks": states} if len(states) > 1 else own
        return save_checkpoint(
            self.checkpoint_path,
            self.model,
            self.optimizer,
            self.scheduler,
            epoch=epochs_done,
            step=self.step,
            rng_state=rng_state,
            config=self.config,
            metrics={"history": self.history},
        )

    # ------------------------------------------------------------------ data

    def _num_items(self, data: DataSource) -> int | None:
        if callable(data) and not isinstance(data, Dataset):
            return None
        if isinstance(data, Dataset):
            return len(data)  # type: ignore[arg-type]
        return len(data[0])

    def _take(self, data: DataSource, idx: torch.Tensor) -> Batch | None:
        if len(idx) == 0:
            return None
        if isinstance(data, Dataset):
            return default_collate([data[int(i)] for i in idx])
        return tuple(t[idx] for t in data)

    def _batches(
        self, data: DataSource, epoch: int, generator: torch.Generator | None, batch_size: int, drop_last: bool
    ) -> Iterator[tuple[Batch, int]]:
        """Yield ``(this rank's slice of the global batch or None if empty, global batch size)``."""
        r, w = dist_utils.rank(), dist_utils.world_size()
        n = self._num_items(data)
        if n is None:  # callable source: it batches; we slice
            for batch in data(epoch, generator):  # type: ignore[operator]
                global_n = _batch_len(batch)
                start, stop = dist_utils.shard_bounds(global_n, r, w)
                if start == stop:
                    yield None, global_n
                else:
                    yield (_slice(batch, start, stop) if w > 1 else batch), global_n
            return
        order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
        for begin in range(0, n, batch_size):
            idx = order[begin : begin + batch_size]
            if drop_last and len(idx) < batch_size:
                break
            start, stop = dist_utils.shard_bounds(len(idx), r, w)
            yield self._take(data, idx[start:stop]), len(idx)

    def _num_batches(self, data: DataSource, batch_size: int, drop_last: bool) -> int | None:
        n = self._num_items(data)
        if n is None:
            try:
                return len(data)  # type: ignore[arg-type]
            except TypeError:
                return None
        return n // batch_size if drop_last else -(-n // batch_size)

    def _forward(self, model: nn.Module, x: Any) -> Any:
        return self.forward_fn(model, x) if self.forward_fn is not None else model(x)

    def autocast(self) -> torch.autocast:
        """The context of forward and loss: bfloat16 autocast on the device type for ``"bf16"``."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    # ------------------------------------------------------------------ loop

    def fit(self) -> dict[str, list[float]]:
        """Train from ``start_epoch`` to ``epochs``; return the per-epoch history.

        History keys: ``epoch`` (1-based), ``loss``, ``lr``, ``time_s``, the metric name if
        ``metric_fn`` is given, and ``eval_loss`` / ``eval_<metric>`` if ``eval_data`` is given.
        Under torchrun the process group is created here and destroyed on return.
        """
        created_group = dist_utils.init_distributed(dist_utils.default_backend(self.device))
        train_model: nn.Module | None = None
        try:
            self._check_shardable()
            train_model = dist_utils.wrap_model(self.model, self.side_parameters)
            with dist_utils.global_batch_norm(self.model):
                for epoch in range(self.start_epoch, self.epochs):
                    stats = self._train_epoch(train_model, epoch)
                    if self.scheduler is not None and self.scheduler_interval == "epoch":
                        self.scheduler.step()
                    for key, value in stats.items():
                        self.history.setdefault(key, []).append(value)
                    done = epoch + 1
                    if done % self.checkpoint_every == 0 or done == self.epochs:
                        self.save(done)
                    if self.on_epoch_end is not None:
                        self.on_epoch_end(epoch, stats)
                    if self.progress and dist_utils.is_main_process() and not sys.stderr.isatty():
                        print(epoch_line(stats, self.epochs), file=sys.stderr, flush=True)
            dist_utils.barrier()
            return self.history
        finally:
            # Free the DDP wrapper (its reducer holds the group) before the group is destroyed;
            # destroying the group first can hang in the reducer's destructor.
            del train_model
            if created_group:
                dist_utils.cleanup_distributed()

    def _check_shardable(self) -> None:
        w = dist_utils.world_size()
        if w == 1:
            return
        if self.batch_size < w:
            raise ValueError(f"global batch_size {self.batch_size} is smaller than world size {w}")
        n = self._num_items(self.train_data)
        if n is not None and not self.drop_last and 0 < n % self.batch_size < w:
            raise ValueError(
                f"the last batch has {n % self.batch_size} samples, fewer than the {w} ranks; "
                "pass drop_last=True or change batch_size"
            )

    def _train_epoch(self, train_model: nn.Module, epoch: int) -> dict[str, float]:
        t0 = time.perf_counter()
        world = dist_utils.world_size()
        self._data_generator.manual_seed(self.seed + epoch)
        train_model.train()
        show = self.progress and dist_utils.is_main_process()
        bar = tqdm(
            total=self._num_batches(self.train_data, self.batch_size, self.drop_last),
            desc=f"epoch {epoch + 1}/{self.epochs}",
            disable=None if show else True,  # None: a bar on a terminal only; else fit() logs lines
            dynamic_ncols=True,
        )
        loss_sum = metric_sum = 0.0
        count = 0
        try:
            batches = self._batches(
                self.train_data, epoch, self._data_generator, self.batch_size, self.drop_last
            )
            for batch, global_n in batches:
                if batch is None:
                    raise ValueError(
                        f"rank {dist_utils.rank()} got an empty slice of a {global_n}-sample batch; "
                        "use a larger batch or drop_last=True"
                    )
                x, y = _to_device(batch, self.device)
                local_n = _batch_len(y)
                # DDP averages gradients over ranks: weight each rank's mean by its share
                share = local_n * world / global_n if world > 1 else 1.0
                # as many micro-batches on every rank (each BatchNorm forward may be a collective)
                parts = min(self.accumulate, global_n // world)
                self.optimizer.zero_grad(set_to_none=True)
                for i in range(parts):  # micro-batches; gradients add up to the local mean's
                    a, b = dist_utils.shard_bounds(local_n, i, parts)
                    xi, yi = _slice(x, a, b), _slice(y, a, b)
                    last = i == parts - 1
                    with contextlib.nullcontext() if last or world == 1 else train_model.no_sync():
                        with self.autocast():
                            out = self._forward(train_model, xi)
                            loss = self.loss_fn(out, yi)
                        (loss * (share * (b - a) / local_n)).backward()
                    loss_sum += loss.item() * (b - a)
                    if self.metric_fn is not None:
                        with torch.no_grad():
                            metric_sum += float(self.metric_fn(out, yi)) * (b - a)
                dist_utils.average_gradients(self.side_parameters)
                self.optimizer.step()
                self.step += 1
                if self.scheduler is not None and self.scheduler_interval == "step":
                    self.scheduler.step()
                count += local_n
                postfix = {"loss": f"{loss_sum / count:.4f}"}
                if self.metric_fn is not None:
                    postfix[self.metric_name] = f"{metric_sum / count:.4f}"
                bar.set_postfix(postfix)
                bar.update(1)
            loss_sum, metric_sum, count = dist_utils.all_reduce_sum([loss_sum, metric_sum, count])
            stats: dict[str, float] = {"epoch": epoch + 1, "loss": loss_sum / max(count, 1)}
            if self.metric_fn is not None:
                stats[self.metric_name] = metric_sum / max(count, 1)
            if self.eval_data is not None:
                stats.update({f"eval_{k}": v for k, v in self.evaluate(self.eval_data, epoch).items()})
                bar.set_postfix({k: f"{v:.4f}" for k, v in stats.items() if k != "epoch"})
            stats["lr"] = float(self.optimizer.param_groups[0]["lr"])
            stats["time_s"] = time.perf_counter() - t0
            return stats
        finally:
            bar.close()

    @torch.no_grad()
    def evaluate(self, data: DataSource, epoch: int = 0) -> dict[str, float]:
        """``{"loss": mean loss, <metric_name>: mean metric}`` over ``data`` in order (all ranks' slices)."""
        was_training = self.model.training
        self.model.eval()
        loss_sum = metric_sum = 0.0
        count = 0
        try:
            for batch, _ in self._batches(data, epoch, None, self.eval_batch_size, False):
                if batch is None:
                    continue
                x, y = _to_device(batch, self.device)
                n = _batch_len(y)
                with self.autocast():
                    out = self._forward(self.model, x)
                    loss = self.loss_fn(out, y)
                loss_sum += float(loss) * n
                if self.metric_fn is not None:
                    metric_sum += float(self.metric_fn(out, y)) * n
                count += n
        finally:
            self.model.train(was_training)
        loss_sum, metric_sum, count = dist_utils.all_reduce_sum([loss_sum, metric_sum, count])
        result = {"loss": loss_sum / max(count, 1)}
        if self.metric_fn is not None:
            result[self.metric_name] = metric_sum / max(count, 1)
        return result


def _check_source(data: Any, name: str) -> None:
    """Reject data sources the loop cannot batch, naming the argument."""
    if isinstance(data, Dataset) or (callable(data) and not isinstance(data, torch.Tensor)):
        return
    if isinstance(data, torch.Tensor) or not isinstance(data, (tuple, list)) or not data:
        raise TypeError(
            f"{name} must be a tuple of tensors such as (x, y), a map-style Dataset or a callable "
            f"(epoch, generator) -> batches; got {type(data).__name__}"
        )
    if not all(isinstance(t, torch.Tensor) for t in data):
        raise TypeError(f"{name}: every element must be a tensor")
    lengths = {len(t) for t in data}
    if len(lengths) != 1:
        raise ValueError(f"{name}: tensors have different first dimensions {sorted(lengths)}")


def _batch_len(obj: Any) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.shape[0]
    if isinstance(obj, Mapping):
        return _batch_len(next(iter(obj.values())))
    if isinstance(obj, (list, tuple)):
        return _batch_len(obj[0])
    return len(obj)


def _slice(obj: Any, start: int, stop: int) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj[start:stop]
    if isinstance(obj, Mapping):
        return {k: _slice(v, start, stop) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return tuple(_slice(v, start, stop) for v in obj)
    if isinstance(obj, list) and obj and isinstance(obj[0], (torch.Tensor, Mapping, tuple, list)):
        return [_slice(v, start, stop) for v in obj]
    return obj[start:stop]


def _to_device(batch: Batch, device: torch.device) -> tuple[Any, Any]:
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise ValueError(f"a training batch must be an (x, y) pair, got {type(batch).__name__}")
    return tuple(_move(b, device) for b in batch)  # type: ignore[return-value]


def _move(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, Mapping):
        return {k: _move(v, device) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return type(obj)(_move(v, device) for v in obj)
    return obj
