"""Neuromorphic event datasets (N-MNIST, SHD, DVS Gesture) read from local files through tonic and
binned into time-first frames ``[T, B, ...]``.

Optional: needs the ``events`` extra (``pip install -e '.[events]'``: tonic); tonic is imported by
the loaders only. Nothing is downloaded: each loader reads the files of the dataset's own release
from ``root`` in the folder layout tonic uses (``root`` may also be that dataset folder itself) and
raises ``FileNotFoundError`` naming the files it expects when they are missing:

===============  =============================================================================
N-MNIST          ``NMNIST/Train/<digit>/*.bin``, ``NMNIST/Test/<digit>/*.bin`` (the extracted
                 ``Train.zip`` / ``Test.zip``; 5 bytes per event: x, y, polarity + 23-bit t in us)
SHD              ``SHD/shd_train.h5``, ``SHD/shd_test.h5`` (unpacked; ``spikes/times`` in s,
                 ``spikes/units``, ``labels``, ``extra/keys``, ``extra/speaker``)
DVS Gesture      ``DVSGesture/ibmGestureTrain/userNN_<lighting>/<label>.npy`` and
                 ``DVSGesture/ibmGestureTest/...`` (tonic's preprocessed release: rows x, y, p, t
                 in ms)
===============  =============================================================================

Events are tonic's structured arrays with ``t`` in microseconds. :func:`bin_events` turns the
events of each sample into ``T`` frames. With ``t0`` the sample's first event (or ``t_start_us``):

- over the sample's duration (``window_us=None``): ``D = t_last - t0 + 1`` and bin
  ``k = floor(T (t - t0) / D)`` in ``0..T-1`` (integer arithmetic), so every event lands in a bin
  and every bin spans ``D / T`` us;
- fixed window ``w`` us: ``k = floor((t - t0) / w)``; events with ``k >= T`` are dropped (the sample
  is cut to ``T w`` us) and a shorter sample ends in empty frames;
- ``frame[k, p, y // f, x // f]`` = the number of the sample's events in bin ``k`` at pixel
  ``(x, y)`` with polarity ``p``, ``f`` the ``downsample`` factor (SHD, a 1-D sensor of 700
  channels: ``frame[k, unit]``); ``binary`` clips the counts to 1 (spikes).

(``tonic.transforms.ToFrame(n_time_bins=T)`` is not used: its bins last ``floor((t_last - t0) / T)``
us, so it drops the events of the last ``(t_last - t0) mod T`` us, the last event always unless T
divides the duration, and every event of a sample shorter than T us.)

A split (:class:`EventSplit`) bins on access, since a whole binned dataset does not fit in memory
(N-MNIST at T = 10 is 22 GB of float32): ``split[i]`` is ``(x [T, *frame_shape], y)`` for torch's
``Dataset`` protocol (:class:`spike.train.trainer.Trainer` batches it to ``[B, T, ...]``), and
``split.batch(indices)`` / ``split.batches(batch_size)`` give time-first ``([T, B, ...], y [B])``
float32 / int64, what the models and backends take.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

from spike.train.datasets import DatasetFormatError

__all__ = ["Binning", "EventSplit", "EventDataset", "bin_events", "frame_shape", "load_nmnist", "load_shd",
           "load_dvs_gesture", "EVENT_DATASETS"]

EVENT_DATASETS = ("nmnist", "shd", "dvs_gesture")


@dataclass(frozen=True)
class Binning:
    """How a sample's events become ``n_time_bins`` frames (module docstring): over the sample's
    duration (``window_us`` None) or windows of ``window_us`` microseconds, from the first event or
    ``t_start_us``; pixels divided by ``downsample``; counts clipped to 1 when ``binary``."""

    n_time_bins: int
    window_us: float | None = None
    t_start_us: float | None = None
    downsample: int = 1
    binary: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.n_time_bins, bool) or not isinstance(self.n_time_bins, int) or self.n_time_bins < 1:
            raise ValueError(f"n_time_bins must be an integer >= 1, got {self.n_time_bins!r}")
        if self.window_us is not None and not (np.isfinite(self.window_us) and self.window_us > 0):
            raise ValueError(f"window_us must be a positive number of microseconds, got {self.window_us!r}")
        if self.t_start_us is not None and not np.isfinite(self.t_start_us):
            raise ValueError(f"t_start_us must be finite, got {self.t_start_us!r}")
        if isinstance(self.downsample, bool) or not isinstance(self.downsample, int) or self.downsample < 1:
            raise ValueError(f"downsample must be an integer >= 1, got {self.downsample!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def frame_shape(sensor_size: Sequence[int], downsample: int = 1, spatial: bool = True) -> tuple[int, ...]:
    """The shape of one frame of a tonic sensor ``(W, H, P)``: ``(P, ceil(H/f), ceil(W/f))`` for a
    camera (``spatial``), ``(W,)`` for a 1-D sensor of one polarity (SHD), else ``(P, W)``."""
    w, h, p = (int(v) for v in sensor_size)
    if spatial:
        return (p, -(-h // downsample), -(-w // downsample))
    return (w,) if p == 1 else (p, w)


def bin_events(samples: Sequence[np.ndarray], sensor_size: Sequence[int], binning: Binning,
               where: Sequence[str] | None = None) -> np.ndarray:
    """Frames ``[T, B, *frame_shape]`` (float32) of ``B`` samples of events (tonic structured arrays
    with ``t`` in us, ``x``, ``p`` and, for a camera, ``y``), by the equations of the module
    docstring. ``where`` names each sample (its file) in the error raised for an event outside the
    sensor."""
    w_s, h_s, p_s = (int(v) for v in sensor_size)
    spatial = any("y" in (s.dtype.names or ()) for s in samples) if len(samples) else h_s > 1
    shape = frame_shape(sensor_size, binning.downsample, spatial)
    T = binning.n_time_bins
    out = np.zeros((T, len(samples), *shape), np.float32)
    for b, ev in enumerate(samples):
        if len(ev) == 0:
            continue
        t = np.asarray(ev["t"], np.int64)
        x = np.asarray(ev["x"], np.int64)
        y = np.asarray(ev["y"], np.int64) if spatial else np.zeros_like(x)
        p = np.asarray(ev["p"], np.int64) if p_s > 1 else np.zeros_like(x)
        bad = (x < 0) | (x >= w_s) | (y < 0) | (y >= h_s) | (p < 0) | (p >= p_s)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            name = where[b] if where is not None else f"sample {b}"
            raise DatasetFormatError(f"{name}: event {i} at x={x[i]}, y={y[i]}, p={p[i]} lies outside the sensor "
                                     f"(W, H, P) = {tuple(sensor_size)}")
        t0 = int(t.min()) if binning.t_start_us is None else binning.t_start_us
        if binning.window_us is None:
            t0 = int(np.floor(t0))
            k = (t - t0) * T // max(int(t.max()) - t0 + 1, 1)
        else:
            k = np.floor((t - t0) / binning.window_us).astype(np.int64)
        keep = (k >= 0) & (k < T)
        f = binning.downsample
        if spatial:
            index = (k[keep], b, p[keep], y[keep] // f, x[keep] // f)
        elif len(shape) == 1:
            index = (k[keep], b, x[keep])
        else:
            index = (k[keep], b, p[keep], x[keep])
        np.add.at(out, index, 1.0)
    if binning.binary:
        np.minimum(out, 1.0, out=out)
    return out


class EventSplit(TorchDataset):
    """One split of an event dataset, binned on access (module docstring). ``source`` is a tonic
    dataset (``source[i] -> (events, label)``); ``names[i]`` the file (and index) of sample ``i``."""

    def __init__(self, source: Any, sensor_size: Sequence[int], binning: Binning, names: Sequence[str]):
        self.source = source
        self.sensor_size = tuple(int(v) for v in sensor_size)
        self.binning = binning
        self.names = list(names)
        if len(self.names) != len(source):
            raise ValueError(f"{len(self.names)} names for {len(source)} samples")

    def __len__(self) -> int:
        return len(self.source)

    def events(self, i: int) -> tuple[np.ndarray, int]:
        """The raw events of sample ``i`` (tonic's structured array, ``t`` in us) and its label."""
        events, label = self.source[int(i)]
        return events, int(label)

    def batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x [T, B, *frame_shape] float32, y [B] int64)`` of the samples ``indices``."""
        pairs = [self.events(i) for i in indices]
        x = bin_events([e for e, _ in pairs], self.sensor_size, self.binning, [self.names[int(i)] for i in indices])
        return torch.from_numpy(x), torch.tensor([label for _, label in pairs], dtype=torch.int64)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x [T, *frame_shape], y)`` of sample ``i`` (sample-major, for torch's batching)."""
        x, y = self.batch([i])
        return x[:, 0], y[0]

    def batches(self, batch_size: int, shuffle: bool = False,
                generator: torch.Generator | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Consecutive (or, with ``shuffle``, ``torch.randperm(N, generator=generator)``-ordered)
        time-first batches ``(x [T, B, ...], y [B])``."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        order = torch.randperm(len(self), generator=generator).tolist() if shuffle else list(range(len(self)))
        for start in range(0, len(order), batch_size):
            yield self.batch(order[start:start + batch_size])


@dataclass(frozen=True, eq=False)
class EventDataset:
    """A train/test pair of :class:`EventSplit` s; ``frame_shape`` is one time step's input shape,
    ``binning.n_time_bins`` the steps. :meth:`to_dict` records how the frames were made (what a
    program trained on them needs to say to be run on the same frames)."""

    name: str
    train: EventSplit
    test: EventSplit
    frame_shape: tuple[int, ...]
    num_classes: int
    binning: Binning

    @property
    def steps(self) -> int:
        return self.binning.n_time_bins

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.name, "frame_shape": list(self.frame_shape), "num_classes": self.num_classes,
                "sensor_size": list(self.train.sensor_size), "binning": self.binning.to_dict()}

    def __repr__(self) -> str:
        return (f"EventDataset({self.name!r}, train={len(self.train)}, test={len(self.test)}, steps={self.steps}, "
                f"frame_shape={self.frame_shape}, num_classes={self.num_classes})")


# --------------------------------------------------------------------------- finding the files


def _dataset_root(root: str | os.PathLike, folder: str, markers: Sequence[str]) -> Path:
    """The folder tonic's ``save_to`` names (it holds ``folder``): ``root`` itself, or the parent
    of ``root`` when ``root`` is the dataset folder (one holding ``markers``)."""
    root = Path(root).expanduser()
    if not (root / folder).is_dir() and root.name == folder and any((root / m).exists() for m in markers):
        return root.parent
    return root


def _local(tonic_class: type, check: Callable[[Any], None]) -> type:
    """``tonic_class`` (same name: tonic's folder is the class name) that never downloads: its
    file check is ``check`` (FileNotFoundError naming the files expected), its download refuses."""

    def _check_exists(self) -> bool:
        check(self)
        return True

    def download(self) -> None:  # never reached: _check_exists raises first
        raise FileNotFoundError(f"{tonic_class.__name__}: files missing under {self.location_on_system}; "
                                "nothing is downloaded")

    return type(tonic_class.__name__, (tonic_class,), {"_check_exists": _check_exists, "download": download})


def _require_tonic() -> Any:
    try:
        import tonic
    except ImportError as err:  # the optional extra
        raise ImportError("event datasets need tonic: pip install -e '.[events]' (see the Makefile)") from err
    return tonic


# --------------------------------------------------------------------------- the three datasets


def load_nmnist(root: str | os.PathLike, *, n_time_bins: int, window_us: float | None = None,
                t_start_us: float | None = None, binary: bool = False,
                first_saccade_only: bool = False) -> EventDataset:
    """N-MNIST (Orchard et al. 2015) from ``root/NMNIST/{Train,Test}/<digit>/*.bin`` through
    ``tonic.datasets.NMNIST``: 34 x 34 pixels, 2 polarities, frames ``(2, 34, 34)``, 10 classes
    (the folder's digit). ``first_saccade_only``: the events with ``t < 100 ms`` (tonic's option)."""
    tonic = _require_tonic()
    base = _dataset_root(root, "NMNIST", ("Train", "Test"))

    def check(ds: Any) -> None:
        folder = Path(ds.location_on_system, ds.folder_name)
        if not any(folder.glob("[0-9]/*.bin")):
            raise FileNotFoundError(f"N-MNIST: no event files {folder}/<digit 0-9>/*.bin (the extracted "
                                    f"{ds.folder_name}.zip of the N-MNIST release; nothing is downloaded)")

    cls = _local(tonic.datasets.NMNIST, check)
    binning = Binning(n_time_bins, window_us, t_start_us, 1, binary)
    splits = {}
    for split, train in (("train", True), ("test", False)):
        ds = cls(str(base), train=train, first_saccade_only=first_saccade_only)
        splits[split] = EventSplit(ds, ds.sensor_size, binning, ds.data)
    return EventDataset("nmnist", splits["train"], splits["test"], frame_shape(cls.sensor_size), len(cls.classes),
                        binning)


def load_shd(root: str | os.PathLike, *, n_time_bins: int, window_us: float | None = None,
             t_start_us: float | None = None, binary: bool = False) -> EventDataset:
    """The Spiking Heidelberg Digits (Cramer et al. 2020) from ``root/SHD/shd_{train,test}.h5``
    through ``tonic.datasets.SHD``: 700 input channels (frames ``(700,)``, so batches are
    ``[T, B, 700]``), 20 classes (one per name in the file's ``extra/keys``); tonic turns the
    spike times from seconds into integer microseconds (``t = int(t_s * 1e6)``)."""
    tonic = _require_tonic()
    base = _dataset_root(root, "SHD", ("shd_train.h5", "shd_test.h5"))

    def check(ds: Any) -> None:
        path = Path(ds.location_on_system, ds.data_filename)
        if not path.is_file():
            raise FileNotFoundError(f"SHD: {path} not found (the unpacked {ds.data_filename} of the SHD release; "
                                    "nothing is downloaded)")

    cls = _local(tonic.datasets.SHD, check)
    binning = Binning(n_time_bins, window_us, t_start_us, 1, binary)
    splits = {}
    for split, train in (("train", True), ("test", False)):
        ds = cls(str(base), train=train)
        path = os.path.join(ds.location_on_system, ds.data_filename)
        splits[split] = EventSplit(ds, ds.sensor_size, binning, [f"{path}[{i}]" for i in range(len(ds))])
    classes = splits["train"].source.classes  # the file's extra/keys: one name per label
    return EventDataset("shd", splits["train"], splits["test"], frame_shape(cls.sensor_size, 1, False), len(classes),
                        binning)


def load_dvs_gesture(root: str | os.PathLike, *, n_time_bins: int, window_us: float | None = None,
                     t_start_us: float | None = None, downsample: int = 1, binary: bool = False) -> EventDataset:
    """IBM DVS Gesture (Amir et al. 2017) in tonic's preprocessed release, from
    ``root/DVSGesture/ibmGesture{Train,Test}/userNN_<lighting>/<label>.npy`` through
    ``tonic.datasets.DVSGesture``: 128 x 128 pixels, 2 polarities, 11 classes; frames
    ``(2, ceil(128/f), ceil(128/f))`` for ``downsample`` f. Samples are ordered by file path."""
    tonic = _require_tonic()
    base = _dataset_root(root, "DVSGesture", ("ibmGestureTrain", "ibmGestureTest"))

    def check(ds: Any) -> None:
        folder = Path(ds.location_on_system, ds.folder_name)
        if not any(folder.glob("user*_*/*.npy")):
            raise FileNotFoundError(f"DVS Gesture: no event files {folder}/userNN_<lighting>/<label>.npy (tonic's "
                                    "preprocessed DVS Gesture release; nothing is downloaded)")

    cls = _local(tonic.datasets.DVSGesture, check)
    binning = Binning(n_time_bins, window_us, t_start_us, downsample, binary)
    splits = {}
    for split, train in (("train", True), ("test", False)):
        ds = cls(str(base), train=train)
        order = sorted(range(len(ds.data)), key=lambda i: ds.data[i])  # os.walk leaves files unordered
        for attr in ("data", "targets", "users", "lighting"):
            setattr(ds, attr, [getattr(ds, attr)[i] for i in order])
        splits[split] = EventSplit(ds, ds.sensor_size, binning, ds.data)
    return EventDataset("dvs_gesture", splits["train"], splits["test"], frame_shape(cls.sensor_size, downsample),
                        len(cls.classes), binning)
