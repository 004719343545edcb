"""Atomic file writes and training checkpoints.

Every file is written to a temporary file in the target's directory, flushed, fsynced and then
renamed onto the target (``os.replace``), so an interrupted run leaves either the old file or the
new one, never a partial one (design brief §9).

Checkpoint schema (``format_version`` 1), a plain dict loadable with ``torch.load(weights_only=True)``:

``format_version`` (int)
    Schema version; loading a newer version raises :class:`CheckpointError`.
``config`` (dict)
    Everything needed to rebuild the run, plain python types only. Conventional keys (see
    :func:`make_config`): ``model`` = ``{"kind": str, "kwargs": dict}`` (constructor arguments),
    ``encoding`` (the input-encoding dict), ``num_steps`` (simulation time steps), ``dataset`` (name).
    Extra keys are allowed.
    :class:`spike.train.trainer.Trainer` adds ``trainer``: ``batch_size`` (the global batch),
    ``seed`` and ``precision`` (``"fp32"`` or ``"bf16"``).
``model_state`` (dict[str, Tensor])
    ``state_dict()`` of the bare model (never the DistributedDataParallel wrapper).
``optimizer_state`` / ``scheduler_state`` (dict or None)
    Their ``state_dict()``s.
``epoch`` (int)
    Number of completed epochs; a resumed run continues with epoch index ``epoch``.
``step`` (int)
    Number of optimizer steps taken so far.
``rng_state`` (dict)
    ``torch`` (ByteTensor), ``cuda`` (list of ByteTensors, empty without CUDA), ``numpy``
    (``{"bit_generator", "keys", "pos", "has_gauss", "cached_gaussian"}``), ``python``
    (``[version, [ints], gauss_next]``), ``data_generator`` (ByteTensor or None) and ``generators``
    (``{name: ByteTensor}`` for other named ``torch.Generator``s, e.g. an encoder's).
    See :func:`get_rng_state` / :func:`set_rng_state`. A data-parallel run's checkpoint holds rank
    0's states there and every rank's, in rank order, under ``ranks`` (a list of such dicts); a
    run resumed with as many ranks restores each rank's own (any other number: rank 0's).
``metrics`` (dict)
    Plain python numbers/strings/lists, e.g. the per-epoch training history.

Optional (written by ``spike train`` once training ends, :func:`record_evaluation`):

``test_accuracy`` (float)
    The accuracy ``spike train`` printed: the test split encoded as ``spike run`` encodes it
    (:func:`spike.train.evaluation.encode_samples`, seed 0). ``config["evaluation"]`` holds it with
    ``correct``, ``num_samples``, ``seed``, ``steps`` and ``split``.
``config["target"]`` (dict, optional)
    ``spike train --target``: ``name``, ``synaptic_delay`` (steps built into every synaptic layer),
    ``spike_input``, ``reset``, ``reset_delay`` (:meth:`spike.train.trainer.TargetNeeds.record`).
"""
from __future__ import annotations

import io
import json
import pickle
import os
import random
import re
from pathlib import Path
from typing import Any, Mapping

import h5py
import numpy as np
import torch

from spike.atomic import atomic_write_bytes

__all__ = [
    "FORMAT_VERSION",
    "REQUIRED_KEYS",
    "CheckpointError",
    "atomic_save",
    "atomic_write_text",
    "atomic_write_json",
    "make_config",
    "get_rng_state",
    "set_rng_state",
    "save_checkpoint",
    "load_weights",
    "load_checkpoint",
    "record_evaluation",
]

FORMAT_VERSION = 1
REQUIRED_KEYS = (
    "format_version",
    "config",
    "model_state",
    "optimizer_state",
    "scheduler_state",
    "epoch",
    "step",
    "rng_state",
    "metrics",
)

PathLike = str | os.PathLike


class CheckpointError(RuntimeError):
    """A checkpoint file exists but cannot be used (corrupt, truncated, wrong schema)."""


# --------------------------------------------------------------------------- atomic writes


def atomic_save(obj: Any, path: PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` atomically; on any failure ``path`` is untouched and no temp file remains.

    The archive is built in memory first: torch's own file writer reports a full disk as an
    internal assertion, Python's as the ``OSError`` it is."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(path, buffer.getbuffer())


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: PathLike, obj: Any, indent: int = 2) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically (serialisation happens before the file is touched)."""
    text = json.dumps(obj, indent=indent, sort_keys=True) + "\n"
    return atomic_write_text(path, text)


# --------------------------------------------------------------------------- config / plain values


def make_config(
    model_kind: str,
    model_kwargs: Mapping[str, Any] | None = None,
    encoding: Mapping[str, Any] | None = None,
    num_steps: int | None = None,
    dataset: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Build a checkpoint ``config`` dict in the conventional layout (see module docstring)."""
    config: dict[str, Any] = {
        "model": {"kind": str(model_kind), "kwargs": dict(model_kwargs or {})},
        "encoding": dict(encoding or {}),
        "num_steps": num_steps,
        "dataset": dataset,
    }
    config.update(extra)
    _check_plain(config, "config")
    return config


_PLAIN_SCALARS = (type(None), bool, int, float, str, bytes)


def _check_plain(obj: Any, where: str) -> None:
    """Raise TypeError naming the offending key if ``obj`` holds anything ``weights_only`` cannot load."""
    if isinstance(obj, _PLAIN_SCALARS) or isinstance(obj, (torch.Tensor, torch.Size, torch.dtype)):
        return
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            if not isinstance(key, _PLAIN_SCALARS):
                raise TypeError(f"{where}: key {key!r} has type {type(key).__name__}; expected str/int")
            _check_plain(value, f"{where}[{key!r}]")
        return
    if isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            _check_plain(value, f"{where}[{i}]")
        return
    raise TypeError(
        f"{where} has type {type(obj).__name__}; checkpoints hold only tensors and plain python "
        "values (None/bool/int/float/str/list/tuple/dict)"
    )


# --------------------------------------------------------------------------- RNG state


def get_rng_state(
    generator: torch.Generator | None = None,
    generators: Mapping[str, torch.Generator] | None = None,
) -> dict[str, Any]:
    """Capture torch (CPU and CUDA), numpy, python ``random`` and the given generators' states.

    ``generator`` is the data-order generator; ``generators`` are other named generators.
    """
    bit_generator, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "numpy": {
            "bit_generator": str(bit_generator),
            "keys": [int(k) for k in keys],
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": [int(version), list(internal), gauss_next],
        "data_generator": generator.get_state() if generator is not None else None,
        "generators": {str(k): g.get_state() for k, g in (generators or {}).items()},
    }


def set_rng_state(
    state: Mapping[str, Any],
    generator: torch.Generator | None = None,
    generators: Mapping[str, torch.Generator] | None = None,
) -> None:
    """Restore states captured by :func:`get_rng_state`.

    ``generator`` gets ``data_generator``; each of ``generators`` gets the state saved under its
    name (a KeyError names any generator the state does not hold).
    """
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["bit_generator"],
            np.asarray(np_state["keys"], dtype=np.uint32),
            int(np_state["pos"]),
            int(np_state["has_gauss"]),
            float(np_state["cached_gaussian"]),
        )
    )
    version, internal, gauss_next = state["python"]
    random.setstate((int(version), tuple(int(v) for v in internal), gauss_next))
    if generator is not None and state.get("data_generator") is not None:
        generator.set_state(state["data_generator"])
    saved = state.get("generators") or {}
    for name, gen in (generators or {}).items():
        if name not in saved:
            raise KeyError(f"RNG state has no generator named {name!r} (it has {sorted(saved)})")
        gen.set_state(saved[name])


# --------------------------------------------------------------------------- checkpoints


def save_checkpoint(
    path: PathLike,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any | None,
    epoch: int,
    step: int,
    rng_state: Mapping[str, Any] | None,
    config: Mapping[str, Any],
    metrics: Mapping[str, Any],
) -> Path:
    """Write a checkpoint (schema in the module docstring) atomically to ``path``.

    ``model`` may be wrapped in DistributedDataParallel; the bare module's state is stored.
    ``rng_state=None`` captures the current global RNG states.
    """
    bare = getattr(model, "module", model) if _is_ddp(model) else model
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a dict, got {type(config).__name__}")
    checkpoint = {
        "format_version": FORMAT_VERSION,
        "config": dict(config),
        "model_state": bare.state_dict(),
        "optimizer_state": optimizer.state_dict() if optimizer is not None else None,
        "scheduler_state": scheduler.state_dict() if scheduler is not None else None,
        "epoch": int(epoch),
        "step": int(step),
        "rng_state": dict(rng_state) if rng_state is not None else get_rng_state(),
        "metrics": dict(metrics),
    }
    for key in ("config", "metrics", "rng_state", "scheduler_state"):
        _check_plain(checkpoint[key], key)
    return atomic_save(checkpoint, path)


_TORCH_SIGNATURES = (b"PK\x03\x04", b"\x80")  # torch.save's zip archive; a legacy pickle


def load_weights(path: PathLike, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with one-line errors (:class:`CheckpointError`): an
    HDF5 file (a program or NIR graph) or any other non-torch file is named as such, a file holding
    Python objects beyond tensors and plain values is refused naming the object (loading it could
    run code), and a damaged archive is called corrupt or truncated."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {p}")
    with open(p, "rb") as f:
        head = f.read(8)
    if h5py.is_hdf5(p):  # at offset 0, or after a user block (a program's header)
        raise CheckpointError(f"{p} is an HDF5 file (a compiled program or a NIR graph), not a checkpoint: "
                              "`spike run` runs a program, a .nir name compiles a NIR graph")
    if not head.startswith(_TORCH_SIGNATURES):
        raise CheckpointError(f"{p} is not a PyTorch checkpoint (expected a file written by torch.save, "
                              f"e.g. by `spike train`; it starts with {head[:4]!r})")
    try:
        return torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))
        what = f" ({found.group(1)})" if found else ""
        raise CheckpointError(f"{p} holds Python objects beyond tensors and plain values{what}: refused, since "
                              "loading it could run code (save a state dict or a `spike train` checkpoint)") from exc
    except Exception as exc:  # torch raises RuntimeError/EOFError/... for damaged files
        first = str(exc).split(". ")[0].strip()
        raise CheckpointError(f"{p} is corrupt or truncated ({type(exc).__name__}: {first})") from exc


def load_checkpoint(path: PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Load and validate a checkpoint written by :func:`save_checkpoint` (``weights_only=True``).

    Raises FileNotFoundError if ``path`` does not exist and :class:`CheckpointError` if it is not a
    valid checkpoint (corrupt/truncated, not a dict, a required key missing, unknown version).
    """
    p = Path(path)
    checkpoint = load_weights(p, map_location)
    if not isinstance(checkpoint, dict):
        raise CheckpointError(
            f"{p} is not a valid checkpoint: expected a dict, found {type(checkpoint).__name__}"
        )
    for key in REQUIRED_KEYS:
        if key not in checkpoint:
            raise CheckpointError(f"{p} is not a valid checkpoint: required key {key!r} is missing")
    version = checkpoint["format_version"]
    if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise CheckpointError(
            f"{p} is not a valid checkpoint: format_version {version!r} is not supported "
            f"(this version reads 1..{FORMAT_VERSION})"
        )
    if not isinstance(checkpoint["config"], dict):
        raise CheckpointError(f"{p} is not a valid checkpoint: 'config' must be a dict")
    for key in ("epoch", "step"):
        if not isinstance(checkpoint[key], int) or checkpoint[key] < 0:
            raise CheckpointError(
                f"{p} is not a valid checkpoint: {key!r} must be a non-negative int, "
                f"found {checkpoint[key]!r}"
            )
    return checkpoint


def record_evaluation(path: PathLike, evaluation: Mapping[str, Any], split: str = "test") -> dict[str, Any]:
    """Add a final evaluation to the checkpoint at ``path`` (atomically) and return the checkpoint.

    ``evaluation`` is :func:`spike.train.evaluation.evaluate_model`'s dict; it goes to
    ``config["evaluation"]`` (with ``split``) and its accuracy to the top-level ``test_accuracy``.
    """
    ckpt = load_checkpoint(path)
    record = {**{k: evaluation[k] for k in ("accuracy", "correct", "num_samples", "seed", "steps") if k in evaluation},
              "split": split}
    _check_plain(record, "evaluation")
    ckpt["config"] = {**ckpt["config"], "evaluation": record}
    ckpt["test_accuracy"] = float(record["accuracy"])
    atomic_save(ckpt, path)
    return ckpt


def _is_ddp(model: torch.nn.Module) -> bool:
    return isinstance(model, torch.nn.parallel.DistributedDataParallel)
