"""Event datasets through tonic: small files written in each dataset's own format (N-MNIST's 5-byte
.bin events, SHD's HDF5 layout, DVS Gesture's preprocessed .npy files), read back by the loaders
through tonic and binned; the frames equal a plain-Python binning of the events written. Missing
files are refused by name and nothing is downloaded."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from spike.train.datasets import DatasetFormatError
from spike.train.event_datasets import Binning, bin_events, load_dvs_gesture, load_nmnist, load_shd

tonic = pytest.importorskip("tonic")  # the optional `events` extra


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a loader tried to download")

    monkeypatch.setattr(tonic.dataset, "download_and_extract_archive", refuse)


def _naive(samples: list[list[tuple[int, int, int, int]]], shape: tuple[int, ...], T: int, window: float | None = None,
           t_start: int | None = None, f: int = 1, binary: bool = False) -> np.ndarray:
    """The module's binning, event by event: samples of (t_us, x, y, p) -> [T, B, *shape]."""
    out = np.zeros((T, len(samples), *shape), np.float32)
    for b, events in enumerate(samples):
        if not events:
            continue
        t0 = min(e[0] for e in events) if t_start is None else t_start
        duration = max(e[0] for e in events) - t0 + 1
        for t, x, y, p in events:
            k = (t - t0) * T // duration if window is None else int(np.floor((t - t0) / window))
            if 0 <= k < T:
                idx = (k, b, p, y // f, x // f) if len(shape) == 3 else (k, b, x)
                out[idx] = 1 if binary else out[idx] + 1
    return out


def _events(rng: np.random.Generator, n: int, w: int, h: int, t_max: int,
            edges: tuple[int, int, int] | None = None) -> list[tuple[int, int, int, int]]:
    """``n`` random events in [0, t_max) us; ``edges=(t0, width, T)`` adds one on each side of every
    bin edge ``t0 + j width`` (first event t0, last t0 + T width - 1), pinning the bin equation."""
    t = rng.integers(0, t_max, n)
    if edges is not None:
        t0, width, T = edges
        t = np.concatenate([np.clip(t, t0, t0 + T * width - 1), [t0, t0 + T * width - 1],
                            [t0 + j * width + d for j in range(1, T) for d in (-1, 0)]])
    return [(int(ti), int(rng.integers(w)), int(rng.integers(h)), int(rng.integers(2))) for ti in np.sort(t)]


# --------------------------------------------------------------------------- N-MNIST


def _write_nmnist(path: Path, events: list[tuple[int, int, int, int]]) -> None:
    """N-MNIST's format: 5 bytes per event, x, y, then polarity in bit 7 and t (us) in 23 bits."""
    raw = bytearray()
    for t, x, y, p in events:
        raw += bytes([x, y, (p << 7) | ((t >> 16) & 0x7F), (t >> 8) & 0xFF, t & 0xFF])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(raw))


def test_nmnist_frames_equal_the_events_written(tmp_path) -> None:
    rng = np.random.default_rng(0)
    files = {("Train", 3, "00002"): 40, ("Train", 3, "00011"): 25, ("Train", 7, "00005"): 30, ("Test", 5, "00001"): 1}
    written = {}
    for (split, digit, stem), n in files.items():
        written[split, digit, stem] = _events(rng, n, 34, 34, 400_000, edges=(1000 * n, 50_000, 6))
        _write_nmnist(tmp_path / "NMNIST" / split / str(digit) / f"{stem}.bin", written[split, digit, stem])
    data = load_nmnist(tmp_path, n_time_bins=6)
    assert (data.frame_shape, data.num_classes, data.steps) == ((2, 34, 34), 10, 6)
    assert (len(data.train), len(data.test)) == (3, 1)
    train = [written[k] for k in sorted(written) if k[0] == "Train"]  # tonic's order: digit folders, then files
    x, y = data.train.batch(range(3))
    assert x.dtype == torch.float32 and x.shape == (6, 3, 2, 34, 34) and y.tolist() == [3, 3, 7]
    np.testing.assert_array_equal(x.numpy(), _naive(train, (2, 34, 34), 6))
    assert x.sum() == sum(map(len, train))  # binning over the duration keeps every event
    counts = x.sum(dim=(2, 3, 4))  # each bin spans 50 ms exactly: both events at each edge fall on their side
    assert bool((counts >= 2).all())
    xt, yt = data.test.batch([0])
    assert yt.tolist() == [5] and xt.sum() == len(written["Test", 5, "00001"])
    sample, label = data.train[2]
    assert sample.shape == (6, 2, 34, 34) and label.dtype == torch.int64 and int(label) == 7
    # a fixed window from the first event, counts clipped to spikes; the dataset folder itself as root
    cut = load_nmnist(tmp_path / "NMNIST", n_time_bins=4, window_us=50_000, binary=True)
    x, _ = next(cut.train.batches(2))
    np.testing.assert_array_equal(x.numpy(), _naive(train[:2], (2, 34, 34), 4, window=50_000, binary=True))
    assert cut.to_dict()["binning"] == {"n_time_bins": 4, "window_us": 50_000, "t_start_us": None, "downsample": 1,
                                        "binary": True}


# --------------------------------------------------------------------------- SHD


def _write_shd(path: Path, samples: list[tuple[np.ndarray, np.ndarray]], labels: list[int], classes: int) -> None:
    """SHD's HDF5 layout: spikes/times (s, one variable-length array per sample), spikes/units,
    labels, extra/keys (class names), extra/speaker."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        times = f.create_dataset("spikes/times", (len(samples),), dtype=h5py.vlen_dtype(np.float32))
        units = f.create_dataset("spikes/units", (len(samples),), dtype=h5py.vlen_dtype(np.uint16))
        for i, (t, u) in enumerate(samples):
            times[i], units[i] = t, u
        f["labels"] = np.asarray(labels, np.uint16)
        f["extra/keys"] = np.array([f"class-{c}".encode() for c in range(classes)])
        f["extra/speaker"] = np.arange(len(samples), dtype=np.uint16)


def test_shd_frames_equal_the_spikes_written(tmp_path) -> None:
    rng = np.random.default_rng(1)

    def sample(n: int) -> tuple[np.ndarray, np.ndarray, list]:
        k = np.sort(rng.integers(0, 1024, n))  # times k / 1024 s: exact in float32 and in microseconds
        units = rng.integers(0, 700, n)
        events = [(int(ki) * 15625 // 16, int(u), 0, 0) for ki, u in zip(k, units)]  # t_us = int(k / 1024 * 1e6)
        return (k / 1024).astype(np.float32), units.astype(np.uint16), events

    train = [sample(n) for n in (50, 80, 5)]
    test = [sample(20)]
    _write_shd(tmp_path / "SHD" / "shd_train.h5", [(t, u) for t, u, _ in train], [4, 19, 0], 20)
    _write_shd(tmp_path / "SHD" / "shd_test.h5", [(t, u) for t, u, _ in test], [11], 20)
    data = load_shd(tmp_path, n_time_bins=10)
    assert (data.frame_shape, data.num_classes, len(data.train), len(data.test)) == ((700,), 20, 3, 1)
    x, y = data.train.batch([0, 1, 2])
    assert x.shape == (10, 3, 700) and y.tolist() == [4, 19, 0]
    np.testing.assert_array_equal(x.numpy(), _naive([e for _, _, e in train], (700,), 10))
    # fixed 25 ms windows from the start of the recording (t = 0)
    cut = load_shd(tmp_path, n_time_bins=30, window_us=25_000, t_start_us=0)
    x, y = cut.test.batch([0])
    np.testing.assert_array_equal(x.numpy(), _naive([test[0][2]], (700,), 30, window=25_000, t_start=0))
    assert y.tolist() == [11]


# --------------------------------------------------------------------------- DVS Gesture


def test_dvs_gesture_frames_equal_the_events_written(tmp_path) -> None:
    rng = np.random.default_rng(2)
    files = {("ibmGestureTrain", "user01_fluorescent", 4): 60, ("ibmGestureTrain", "user01_fluorescent", 0): 30,
             ("ibmGestureTrain", "user02_led", 2): 45, ("ibmGestureTest", "user24_natural", 10): 50}
    written = {}
    for (split, user, label), n in files.items():
        ms = _events(rng, n, 128, 128, 6000)  # tonic's release: rows x, y, p, t in ms
        written[split, user, label] = [(t * 1000, x, y, p) for t, x, y, p in ms]
        path = tmp_path / "DVSGesture" / split / user / f"{label}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, np.array([(x, y, p, t) for t, x, y, p in ms], np.int64))
    data = load_dvs_gesture(tmp_path, n_time_bins=5, downsample=4)
    assert (data.frame_shape, data.num_classes, len(data.train), len(data.test)) == ((2, 32, 32), 11, 3, 1)
    order = [("ibmGestureTrain", "user01_fluorescent", 0), ("ibmGestureTrain", "user01_fluorescent", 4),
             ("ibmGestureTrain", "user02_led", 2)]  # by file path
    batches = list(data.train.batches(2))
    assert [b[0].shape for b in batches] == [(5, 2, 2, 32, 32), (5, 1, 2, 32, 32)]
    x = torch.cat([b[0] for b in batches], dim=1)
    assert torch.cat([b[1] for b in batches]).tolist() == [0, 4, 2]
    np.testing.assert_array_equal(x.numpy(), _naive([written[k] for k in order], (2, 32, 32), 5, f=4))
    x, y = data.test.batch([0])
    assert y.tolist() == [10]
    np.testing.assert_array_equal(x.numpy(), _naive([written["ibmGestureTest", "user24_natural", 10]],
                                                    (2, 32, 32), 5, f=4))


# --------------------------------------------------------------------------- refusals


def test_missing_files_are_named_and_nothing_is_downloaded(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"NMNIST/Train/<digit 0-9>/\*\.bin"):
        load_nmnist(tmp_path, n_time_bins=4)
    _write_shd(tmp_path / "SHD" / "shd_train.h5", [(np.zeros(1, np.float32), np.zeros(1, np.uint16))], [0], 20)
    with pytest.raises(FileNotFoundError, match=r"SHD/shd_test\.h5 not found"):
        load_shd(tmp_path, n_time_bins=4)
    with pytest.raises(FileNotFoundError, match=r"DVSGesture/ibmGestureTrain/userNN_<lighting>/<label>\.npy"):
        load_dvs_gesture(tmp_path, n_time_bins=4)


def test_binning_refuses_events_outside_the_sensor_and_bad_settings() -> None:
    ev = np.array([(0, 1, 0, 1), (5, 40, 2, 0)], dtype=[("x", int), ("y", int), ("t", int), ("p", int)])
    ev["x"], ev["t"] = [1, 40], [0, 5]
    with pytest.raises(DatasetFormatError, match=r"a\.bin: event 1 at x=40"):
        bin_events([ev], (34, 34, 2), Binning(3), where=["a.bin"])
    one = bin_events([ev[:1]], (34, 34, 2), Binning(3))  # a single event: the first bin
    assert one.shape == (3, 1, 2, 34, 34) and one.sum(axis=(1, 2, 3, 4)).tolist() == [1, 0, 0]
    with pytest.raises(ValueError, match="n_time_bins"):
        Binning(0)
    with pytest.raises(ValueError, match="window_us"):
        Binning(3, window_us=0.0)
