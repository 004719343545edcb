"""Datasets: scikit-learn digits, MNIST (IDX files) and CIFAR-10 (python pickles, read without running code).

Every loader returns a :class:`Dataset` of float32 images in [0, 1] shaped ``[N, *input_shape]``
and int64 labels. Files are parsed here (no torchvision); a missing file raises
``FileNotFoundError`` naming the path expected, a malformed one :class:`DatasetFormatError`
naming the file and what was expected versus found.
"""

from __future__ import annotations

import gzip
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

__all__ = [
    "Dataset",
    "DatasetFormatError",
    "DATASETS",
    "DIGITS_TEST_FRACTION",
    "load_digits",
    "load_mnist",
    "load_cifar10",
    "load_dataset",
    "read_idx",
    "batches",
]

DATASETS = ("digits", "mnist", "cifar10")
DIGITS_TEST_FRACTION = 0.2

MNIST_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch"
CIFAR10_SUBDIR = "cifar-10-batches-py"

# IDX type code -> big-endian numpy dtype (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT").
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class DatasetFormatError(ValueError):
    """A dataset file exists but does not hold what its format promises."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """A train/test split: x float32 in [0, 1] shaped [N, *input_shape], y int64 in [0, num_classes)."""

    name: str
    x_train: torch.Tensor = field(repr=False)
    y_train: torch.Tensor = field(repr=False)
    x_test: torch.Tensor = field(repr=False)
    y_test: torch.Tensor = field(repr=False)
    input_shape: tuple[int, ...]
    num_classes: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_shape", tuple(int(d) for d in self.input_shape))
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.dtype != torch.float32 or y.dtype != torch.int64:
                raise TypeError(f"{self.name} {split}: want float32 x and int64 y, got {x.dtype}, {y.dtype}")
            if x.shape[0] == 0:
                raise ValueError(f"{self.name} {split}: no samples")
            if tuple(x.shape[1:]) != self.input_shape or y.shape != (x.shape[0],):
                raise ValueError(
                    f"{self.name} {split}: x {tuple(x.shape)} / y {tuple(y.shape)} do not match "
                    f"input_shape {self.input_shape}"
                )

    @property
    def num_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def num_test(self) -> int:
        return int(self.x_test.shape[0])

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, train={self.num_train}, test={self.num_test}, "
            f"input_shape={self.input_shape}, num_classes={self.num_classes})"
        )


# --------------------------------------------------------------------------- digits


def load_digits(seed: int = 0) -> Dataset:
    """scikit-learn's 8x8 digits (1797 images, shipped with the package), shape (1, 8, 8).

    Pixels are the original integers 0..16 divided by 16, so every value is an exact float32
    multiple of 1/16. The split is fixed: within each class (indices in ascending order),
    ``round(0.2 * class_size)`` samples picked by ``np.random.RandomState(seed).permutation``
    (NumPy's legacy generator, whose stream is frozen across versions and machines; classes
    visited 0..9 with one generator) go to test, the rest to train; both splits keep the
    original sample order. ``seed=0`` gives 1438 train / 359 test.
    """
    from sklearn.datasets import load_digits as _sk_load_digits

    bunch = _sk_load_digits()
    images = np.asarray(bunch.images, dtype=np.float64)
    labels = np.asarray(bunch.target, dtype=np.int64)
    x = torch.from_numpy((images / 16.0).astype(np.float32)).unsqueeze(1)
    y = torch.from_numpy(labels)

    rng = np.random.RandomState(seed)
    test_mask = np.zeros(len(labels), dtype=bool)
    for c in range(10):
        idx = np.flatnonzero(labels == c)
        n_test = int(round(DIGITS_TEST_FRACTION * len(idx)))
        test_mask[idx[rng.permutation(len(idx))[:n_test]]] = True
    train = torch.from_numpy(np.flatnonzero(~test_mask))
    test = torch.from_numpy(np.flatnonzero(test_mask))
    return Dataset("digits", x[train], y[train], x[test], y[test], (1, 8, 8), 10)


# --------------------------------------------------------------------------- MNIST (IDX)


def _open_maybe_gz(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise DatasetFormatError(f"{path}: cannot read ({e})") from e


def read_idx(path: str | Path) -> np.ndarray:
    """Parse one IDX file (optionally gzip-compressed, by the ``.gz`` suffix) into a native-endian array.

    Format: two zero bytes, a type code (0x08 u8, 0x09 i8, 0x0B i16, 0x0C i32, 0x0D f32, 0x0E f64),
    the number of dimensions, one big-endian uint32 per dimension, then the data, big-endian.
    """
    path = Path(path)
    raw = _open_maybe_gz(path)
    if len(raw) < 4:
        raise DatasetFormatError(f"{path}: expected a 4-byte IDX magic number, found {len(raw)} bytes")
    if raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DatasetFormatError(
            f"{path}: bad IDX magic number 0x{raw[:4].hex()}: expected 0x0000 followed by a type code "
            f"in {{{', '.join(f'0x{c:02X}' for c in _IDX_DTYPES)}}} and the number of dimensions"
        )
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetFormatError(
            f"{path}: truncated header: expected {header} bytes for {ndim} dimensions, found {len(raw)}"
        )
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    found = len(raw) - header
    if found != expected:
        what = "truncated data" if found < expected else "trailing bytes after data"
        raise DatasetFormatError(
            f"{path}: {what}: dims {dims} of {dtype.name} need {expected} data bytes, found {found}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="))


def _find_file(folder: Path, name: str, what: str, alternatives: tuple[Path, ...] = ()) -> Path:
    """Return the first existing of folder/name, folder/name.gz (and the same under alternatives)."""
    for base in (folder, *alternatives):
        for candidate in (base / name, base / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    also = "".join(f", {alt / name}" for alt in alternatives)
    raise FileNotFoundError(f"{what} file not found: expected {folder / name} (or {name}.gz{also})")


def _check_mnist_pair(img_path: Path, images: np.ndarray, lbl_path: Path, labels: np.ndarray) -> None:
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DatasetFormatError(
            f"{img_path}: expected uint8 images of dims (N, 28, 28), found {images.dtype} {images.shape}"
        )
    if images.shape[0] == 0:
        raise DatasetFormatError(f"{img_path}: holds 0 images (expected at least one)")
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DatasetFormatError(f"{lbl_path}: expected uint8 labels of dims (N,), found {labels.dtype} {labels.shape}")
    if labels.shape[0] != images.shape[0]:
        raise DatasetFormatError(
            f"{lbl_path}: expected {images.shape[0]} labels (one per image in {img_path.name}), "
            f"found {labels.shape[0]}"
        )
    if labels.size and labels.max() > 9:
        raise DatasetFormatError(f"{lbl_path}: expected labels 0..9, found {int(labels.max())}")


def load_mnist(folder: str | Path) -> Dataset:
    """MNIST from the four standard IDX files (plain or ``.gz``) in ``folder``
    (or ``folder/MNIST/raw``, torchvision's layout); pixels /255, shape (1, 28, 28)."""
    folder = Path(folder)
    alternatives = (folder / "MNIST" / "raw",)
    paths = {k: _find_file(folder, name, "MNIST", alternatives) for k, name in MNIST_FILES.items()}
    arrays = {k: read_idx(p) for k, p in paths.items()}
    tensors = {}
    for split in ("train", "test"):
        xk, yk = f"x_{split}", f"y_{split}"
        _check_mnist_pair(paths[xk], arrays[xk], paths[yk], arrays[yk])
        tensors[xk] = torch.from_numpy(arrays[xk].astype(np.float32) / np.float32(255)).unsqueeze(1)
        tensors[yk] = torch.from_numpy(arrays[yk].astype(np.int64))
    return Dataset("mnist", input_shape=(1, 28, 28), num_classes=10, **tensors)


# --------------------------------------------------------------------------- CIFAR-10 (pickles)


#: The only globals a CIFAR-10 batch may name: numpy's array and dtype reconstructors (numpy 1 and 2
#: module paths, pickle protocols 2-5) and ``_codecs.encode`` (protocol 2's bytes). Anything else,
#: which is how a pickle runs code, is refused before it is called.
_CIFAR_GLOBALS = frozenset({
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
})


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, tuples, bytes, str, numbers and numpy arrays, nothing else."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _CIFAR_GLOBALS:
            raise pickle.UnpicklingError(f"refused global {module}.{name} (a CIFAR-10 batch holds only "
                                         "dicts, lists, bytes, ints and numpy arrays)")
        return super().find_class(module, name)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch: dict with b"data" (N x 3072 uint8) and b"labels" (N ints in 0..9),
    read with :class:`_ArrayUnpickler` (no code in the file runs)."""
    try:
        with open(path, "rb") as f:
            batch = _ArrayUnpickler(f, encoding="bytes").load()
    except FileNotFoundError:
        raise
    except Exception as e:  # unpickling can fail in many ways on a corrupt file
        raise DatasetFormatError(f"{path}: not a readable CIFAR-10 pickle batch ({type(e).__name__}: {e})") from e
    if not isinstance(batch, dict):
        raise DatasetFormatError(f"{path}: expected a pickled dict, found {type(batch).__name__}")

    def get(key: str):
        for k in (key.encode(), key):
            if k in batch:
                return batch[k]
        raise DatasetFormatError(
            f"{path}: expected key b{key!r} in the batch dict, found keys {sorted(map(repr, batch))}"
        )

    data, labels = get("data"), get("labels")
    data = np.asarray(data)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DatasetFormatError(f"{path}: expected b'data' uint8 of shape (N, 3072), found {data.dtype} {data.shape}")
    if data.shape[0] == 0:
        raise DatasetFormatError(f"{path}: holds 0 images (expected at least one)")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError) as e:
        raise DatasetFormatError(f"{path}: expected b'labels' as a list of ints ({e})") from e
    if labels.shape != (data.shape[0],):
        raise DatasetFormatError(
            f"{path}: expected {data.shape[0]} labels (one per row of b'data'), found shape {labels.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DatasetFormatError(f"{path}: expected labels 0..9, found range [{labels.min()}, {labels.max()}]")
    return data, labels


def load_cifar10(folder: str | Path) -> Dataset:
    """CIFAR-10 from the python batches ``data_batch_1..5`` and ``test_batch`` in ``folder``
    or ``folder/cifar-10-batches-py``; pixels /255, shape (3, 32, 32) (channel-major, as stored)."""
    folder = Path(folder)
    base = folder
    if not (folder / CIFAR10_TEST_FILE).is_file() and (folder / CIFAR10_SUBDIR).is_dir():
        base = folder / CIFAR10_SUBDIR

    def load(names: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        parts = []
        for name in names:
            path = base / name
            if not path.is_file():
                raise FileNotFoundError(
                    f"CIFAR-10 file not found: expected {path} (the python version's batches, "
                    f"in {folder} or {folder / CIFAR10_SUBDIR})"
                )
            parts.append(_read_cifar_batch(path))
        data = np.concatenate([d for d, _ in parts])
        labels = np.concatenate([lbl for _, lbl in parts])
        x = torch.from_numpy(data.astype(np.float32) / np.float32(255)).reshape(-1, 3, 32, 32)
        return x, torch.from_numpy(labels)

    x_train, y_train = load(CIFAR10_TRAIN_FILES)
    x_test, y_test = load((CIFAR10_TEST_FILE,))
    return Dataset("cifar10", x_train, y_train, x_test, y_test, (3, 32, 32), 10)


# --------------------------------------------------------------------------- dispatch, batching


def load_dataset(name: str, root: str | Path | None = None) -> Dataset:
    """Load ``"digits"`` (no files needed), ``"mnist"`` or ``"cifar10"`` (from folder ``root``)."""
    key = name.lower()
    if key == "digits":
        return load_digits()
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")
    if root is None:
        raise ValueError(f"dataset {key!r} is read from files: give the folder holding them (--data-root)")
    return load_mnist(root) if key == "mnist" else load_cifar10(root)


def batches(
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(x[i], y[i])`` mini-batches along dim 0.

    With ``shuffle`` the order is ``torch.randperm(N, generator=generator)``: pass a seeded
    generator for a reproducible order (None uses torch's global RNG).
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    n = x.shape[0]
    if y.shape[0] != n:
        raise ValueError(f"x has {n} samples but y has {y.shape[0]}")
    order = torch.randperm(n, generator=generator) if shuffle else None
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        if order is None:
            yield x[start : start + batch_size], y[start : start + batch_size]
        else:
            idx = order[start : start + batch_size]
            yield x[idx], y[idx]
