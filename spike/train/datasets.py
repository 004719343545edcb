"""Datasets: scikit-learn digits, MNIST (IDX files) and CIFAR-10 (python pickles, read without running code).

Every loader returns a :class:`Dataset` of float32 images in [0, 1] shaped ``[N, *input_shape]``
and int64 labels. Files are parsed here (no torchvision); a missing file raises
``FileNotFoundError`` naming the path expected, a malformed one :class:`DatasetFormatError`
naming the file and what was expected versus found.

:func:`open_test_split` reads a test split a slice at a time instead (:class:`SplitReader`), for a
process that runs only part of it (``torchrun ... spike run``): MNIST reads only the slice's bytes
of the IDX files; CIFAR-10 reads its one test batch file (a pickle cannot be read in part) and no
training batch; digits is built in and tiny, so it is loaded whole and sliced.
"""

from __future__ import annotations

import gzip
import pickle
from dataclasses import dataclass, field
import os
from pathlib import Path
from typing import Callable, Iterator

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
    "read_idx_header",
    "read_idx_rows",
    "SplitReader",
    "open_test_split",
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
    dtype, dims, header = _idx_layout(path, raw)
    _check_idx_size(path, dtype, dims, len(raw) - header)
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="))


def _idx_layout(path: Path, head: bytes) -> tuple[np.dtype, tuple[int, ...], int]:
    """Big-endian dtype, dims and header length of the IDX file ``path`` from its first bytes ``head``."""
    if len(head) < 4:
        raise DatasetFormatError(f"{path}: expected a 4-byte IDX magic number, found {len(head)} bytes")
    if head[0] != 0 or head[1] != 0 or head[2] not in _IDX_DTYPES:
        raise DatasetFormatError(
            f"{path}: bad IDX magic number 0x{head[:4].hex()}: expected 0x0000 followed by a type code "
            f"in {{{', '.join(f'0x{c:02X}' for c in _IDX_DTYPES)}}} and the number of dimensions"
        )
    dtype, ndim = _IDX_DTYPES[head[2]], head[3]
    header = 4 + 4 * ndim
    if len(head) < header:
        raise DatasetFormatError(
            f"{path}: truncated header: expected {header} bytes for {ndim} dimensions, found {len(head)}"
        )
    dims = tuple(int(d) for d in np.frombuffer(head, dtype=">u4", count=ndim, offset=4))
    return dtype, dims, header


def _check_idx_size(path: Path, dtype: np.dtype, dims: tuple[int, ...], found: int) -> None:
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if found != expected:
        what = "truncated data" if found < expected else "trailing bytes after data"
        raise DatasetFormatError(
            f"{path}: {what}: dims {dims} of {dtype.name} need {expected} data bytes, found {found}"
        )


def _open_idx(path: Path):
    """``path`` opened for binary reading (gzip-decompressed by the ``.gz`` suffix), seekable."""
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_idx_header(path: str | Path) -> tuple[np.dtype, tuple[int, ...], int]:
    """``(dtype, dims, header_bytes)`` of an IDX file (``dtype`` big-endian), reading its header only.

    A plain file's size must match the dims (as :func:`read_idx` checks); a ``.gz`` file's data
    are checked when :func:`read_idx_rows` reads them.
    """
    path = Path(path)
    try:
        with _open_idx(path) as f:
            head = f.read(4 + 4 * 255)  # the longest header: 255 dimensions
    except (OSError, EOFError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise DatasetFormatError(f"{path}: cannot read ({e})") from e
    dtype, dims, header = _idx_layout(path, head)
    if path.suffix != ".gz":
        _check_idx_size(path, dtype, dims, os.path.getsize(path) - header)
    return dtype, dims, header


def read_idx_rows(path: str | Path, start: int, stop: int) -> np.ndarray:
    """Rows ``[start, stop)`` (along the first dimension) of an IDX file, native-endian, equal to
    ``read_idx(path)[start:stop]``: only the header and those rows' bytes are read (a ``.gz`` file
    is decompressed up to them, not kept)."""
    path = Path(path)
    dtype, dims, header = read_idx_header(path)
    if not dims or not 0 <= start <= stop <= dims[0]:
        rows = dims[0] if dims else 0
        raise ValueError(f"{path}: rows [{start}, {stop}) are outside its {rows} rows")
    row_bytes = int(np.prod(dims[1:], dtype=np.int64)) * dtype.itemsize
    want = (stop - start) * row_bytes
    raw = b""
    if want:
        try:
            with _open_idx(path) as f:
                f.seek(header + start * row_bytes)
                raw = f.read(want)
        except (OSError, EOFError) as e:
            raise DatasetFormatError(f"{path}: cannot read ({e})") from e
    if len(raw) != want:
        raise DatasetFormatError(f"{path}: truncated data: rows [{start}, {stop}) of dims {dims} need "
                                 f"{want} bytes at offset {header + start * row_bytes}, found {len(raw)}")
    data = np.frombuffer(raw, dtype=dtype).reshape((stop - start, *dims[1:]))
    return data.astype(dtype.newbyteorder("="))


def _find_file(folder: Path, name: str, what: str, alternatives: tuple[Path, ...] = ()) -> Path:
    """Return the first existing of folder/name, folder/name.gz (and the same under alternatives)."""
    for base in (folder, *alternatives):
        for candidate in (base / name, base / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    also = "".join(f", {alt / name}" for alt in alternatives)
    raise FileNotFoundError(f"{what} file not found: expected {folder / name} (or {name}.gz{also})")


def _check_mnist_dims(img_path: Path, img_dtype: np.dtype, img_dims: tuple[int, ...], lbl_path: Path,
                      lbl_dtype: np.dtype, lbl_dims: tuple[int, ...]) -> None:
    """MNIST's images are uint8 ``(N, 28, 28)``, N >= 1, with one uint8 label each."""
    img_dtype, lbl_dtype = np.dtype(img_dtype).newbyteorder("="), np.dtype(lbl_dtype).newbyteorder("=")
    if img_dtype != np.uint8 or len(img_dims) != 3 or tuple(img_dims[1:]) != (28, 28):
        raise DatasetFormatError(
            f"{img_path}: expected uint8 images of dims (N, 28, 28), found {img_dtype} {tuple(img_dims)}"
        )
    if img_dims[0] == 0:
        raise DatasetFormatError(f"{img_path}: holds 0 images (expected at least one)")
    if lbl_dtype != np.uint8 or len(lbl_dims) != 1:
        raise DatasetFormatError(f"{lbl_path}: expected uint8 labels of dims (N,), found {lbl_dtype} {tuple(lbl_dims)}")
    if lbl_dims[0] != img_dims[0]:
        raise DatasetFormatError(
            f"{lbl_path}: expected {img_dims[0]} labels (one per image in {img_path.name}), found {lbl_dims[0]}"
        )


def _check_mnist_labels(lbl_path: Path, labels: np.ndarray) -> None:
    if labels.size and labels.max() > 9:
        raise DatasetFormatError(f"{lbl_path}: expected labels 0..9, found {int(labels.max())}")


def _check_mnist_pair(img_path: Path, images: np.ndarray, lbl_path: Path, labels: np.ndarray) -> None:
    _check_mnist_dims(img_path, images.dtype, images.shape, lbl_path, labels.dtype, labels.shape)
    _check_mnist_labels(lbl_path, labels)


def _mnist_images(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images.astype(np.float32) / np.float32(255)).unsqueeze(1)


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
        tensors[xk] = _mnist_images(arrays[xk])
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


def _cifar_file(folder: Path, name: str) -> Path:
    """Batch ``name`` in ``folder`` or ``folder/cifar-10-batches-py`` (where the test batch is)."""
    base = folder
    if not (folder / CIFAR10_TEST_FILE).is_file() and (folder / CIFAR10_SUBDIR).is_dir():
        base = folder / CIFAR10_SUBDIR
    path = base / name
    if not path.is_file():
        raise FileNotFoundError(
            f"CIFAR-10 file not found: expected {path} (the python version's batches, "
            f"in {folder} or {folder / CIFAR10_SUBDIR})"
        )
    return path


def _cifar_images(data: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(data.astype(np.float32) / np.float32(255)).reshape(-1, 3, 32, 32)


def load_cifar10(folder: str | Path) -> Dataset:
    """CIFAR-10 from the python batches ``data_batch_1..5`` and ``test_batch`` in ``folder``
    or ``folder/cifar-10-batches-py``; pixels /255, shape (3, 32, 32) (channel-major, as stored)."""
    folder = Path(folder)

    def load(names: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        parts = [_read_cifar_batch(_cifar_file(folder, name)) for name in names]
        data = np.concatenate([d for d, _ in parts])
        labels = np.concatenate([lbl for _, lbl in parts])
        return _cifar_images(data), torch.from_numpy(labels)

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


# --------------------------------------------------------------------------- a test split, slice by slice


@dataclass(frozen=True, eq=False)
class SplitReader:
    """A dataset split read a slice at a time (:func:`open_test_split`).

    ``len(reader)`` samples; ``read(start, stop)`` gives ``(x, y)`` of samples ``[start, stop)``,
    equal to the :class:`Dataset`'s ``x[start:stop], y[start:stop]`` (float32 in [0, 1] shaped
    ``[k, *input_shape]``, int64), reading what the format lets it read of those samples alone.
    A slice outside ``[0, len)`` is a ValueError.
    """

    name: str
    num_samples: int
    input_shape: tuple[int, ...]
    num_classes: int | None
    rows: Callable[[int, int], tuple[torch.Tensor, torch.Tensor]] = field(repr=False)

    def __len__(self) -> int:
        return self.num_samples

    def read(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= start <= stop <= self.num_samples:
            raise ValueError(f"{self.name}: samples [{start}, {stop}) are outside its {self.num_samples} samples")
        return self.rows(start, stop)

    @classmethod
    def from_tensors(cls, name: str, x: torch.Tensor, y: torch.Tensor, num_classes: int | None = None) -> "SplitReader":
        """A reader of samples already in memory (``x[i]`` with label ``y[i]``)."""
        if len(x) != len(y):
            raise ValueError(f"{name}: x has {len(x)} samples but y has {len(y)}")
        return cls(name, len(x), tuple(x.shape[1:]), num_classes, lambda a, b: (x[a:b], y[a:b]))


def open_test_split(name: str, root: str | Path | None = None, limit: int | None = None) -> SplitReader:
    """The test split of ``"digits"``, ``"mnist"`` or ``"cifar10"`` (files in ``root``, as
    :func:`load_dataset`), its first ``limit`` samples when given, as a :class:`SplitReader`.

    MNIST: opening reads the two IDX headers (dims checked); each read reads only its samples'
    bytes (:func:`read_idx_rows`; labels checked in 0..9 as read). CIFAR-10: opening reads the
    ``test_batch`` file alone (a pickle is read whole) and keeps its uint8 rows; each read
    converts its slice. Digits: built in (359 test samples), loaded whole, sliced.
    """
    key = name.lower()
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")
    if key == "digits":
        d = load_digits()
        reader = SplitReader.from_tensors("digits test split", d.x_test, d.y_test, d.num_classes)
    elif root is None:
        raise ValueError(f"dataset {key!r} is read from files: give the folder holding them (--data-root)")
    elif key == "mnist":
        reader = _mnist_test_reader(Path(root))
    else:
        reader = _cifar_test_reader(Path(root))
    if limit is None or limit >= reader.num_samples:
        return reader
    return SplitReader(reader.name, int(limit), reader.input_shape, reader.num_classes, reader.rows)


def _mnist_test_reader(folder: Path) -> SplitReader:
    alternatives = (folder / "MNIST" / "raw",)
    img_path = _find_file(folder, MNIST_FILES["x_test"], "MNIST", alternatives)
    lbl_path = _find_file(folder, MNIST_FILES["y_test"], "MNIST", alternatives)
    img_dtype, img_dims, _ = read_idx_header(img_path)
    lbl_dtype, lbl_dims, _ = read_idx_header(lbl_path)
    _check_mnist_dims(img_path, img_dtype, img_dims, lbl_path, lbl_dtype, lbl_dims)

    def rows(start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = read_idx_rows(lbl_path, start, stop)
        _check_mnist_labels(lbl_path, labels)
        return _mnist_images(read_idx_rows(img_path, start, stop)), torch.from_numpy(labels.astype(np.int64))

    return SplitReader(f"MNIST test split ({img_path})", img_dims[0], (1, 28, 28), 10, rows)


def _cifar_test_reader(folder: Path) -> SplitReader:
    path = _cifar_file(folder, CIFAR10_TEST_FILE)
    data, labels = _read_cifar_batch(path)

    def rows(start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        return _cifar_images(data[start:stop]), torch.from_numpy(labels[start:stop])

    return SplitReader(f"CIFAR-10 test split ({path})", len(data), (3, 32, 32), 10, rows)


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
