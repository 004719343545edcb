"""A test split read a slice at a time (:func:`spike.train.datasets.open_test_split`): slices equal
the whole split's, only their bytes are read from MNIST's IDX files, and a rank of a sharded
``evaluate_program`` reads only its own samples while the report stays the one-process report."""
from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from spike.compiler.ir.nodes import Dense, Input, Output, Population
from spike.compiler.ir.program import ProgramBuilder
from spike.train import datasets
from spike.train import distributed as dist_utils
from spike.train.datasets import (DatasetFormatError, SplitReader, load_cifar10, load_digits, open_test_split,
                                  read_idx, read_idx_rows)
from spike.workflows import evaluate_program

N_TEST = 23


def _idx(arr: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape) + arr.tobytes()


def _mnist_test(folder: Path, n: int = N_TEST, gz: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Only MNIST's two test files (no training files: a test-split reader never needs them)."""
    rng = np.random.RandomState(1)
    images, labels = rng.randint(0, 256, (n, 28, 28)).astype(np.uint8), rng.randint(0, 10, n).astype(np.uint8)
    for name, arr in (("t10k-images-idx3-ubyte", images), ("t10k-labels-idx1-ubyte", labels)):
        if gz:
            with gzip.open(folder / f"{name}.gz", "wb") as f:
                f.write(_idx(arr))
        else:
            (folder / name).write_bytes(_idx(arr))
    return images, labels


class _Recorder:
    """A file object that records where it was read: ``(offset, bytes)`` per read."""

    def __init__(self, f, log: list[tuple[str, int, int]], name: str) -> None:
        self.f, self.log, self.name = f, log, name

    def __enter__(self) -> "_Recorder":
        return self

    def __exit__(self, *exc) -> None:
        self.f.close()

    def seek(self, offset: int) -> int:
        return self.f.seek(offset)

    def read(self, size: int) -> bytes:
        at = self.f.tell()
        data = self.f.read(size)
        self.log.append((self.name, at, len(data)))
        return data


@pytest.mark.parametrize("gz", [False, True])
def test_idx_rows_read_only_their_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gz: bool) -> None:
    images, _ = _mnist_test(tmp_path, gz=gz)
    path = tmp_path / ("t10k-images-idx3-ubyte" + (".gz" if gz else ""))
    np.testing.assert_array_equal(read_idx_rows(path, 5, 9), read_idx(path)[5:9])
    log: list[tuple[str, int, int]] = []
    opener = datasets._open_idx
    monkeypatch.setattr(datasets, "_open_idx", lambda p: _Recorder(opener(p), log, p.name))
    rows = read_idx_rows(path, 5, 9)
    np.testing.assert_array_equal(rows, images[5:9])
    header = 4 + 4 * 3
    # the header (one short read of at most 1 KiB), then exactly rows 5..8: 4 x 784 bytes at their offset
    assert log == [(path.name, 0, 1024), (path.name, header + 5 * 784, 4 * 784)]
    assert read_idx_rows(path, 7, 7).shape == (0, 28, 28)
    with pytest.raises(ValueError, match=r"rows \[20, 24\) are outside its 23 rows"):
        read_idx_rows(path, 20, 24)


def test_mnist_reader_slices_equal_the_whole_split(tmp_path: Path) -> None:
    images, labels = _mnist_test(tmp_path)
    reader = open_test_split("mnist", tmp_path)
    assert len(reader) == N_TEST and reader.input_shape == (1, 28, 28) and reader.num_classes == 10
    x, y = reader.read(3, 11)
    torch.testing.assert_close(x, torch.from_numpy(images[3:11].astype(np.float32) / np.float32(255)).unsqueeze(1),
                               rtol=0, atol=0)
    assert y.dtype == torch.int64 and y.tolist() == labels[3:11].tolist()
    assert len(open_test_split("mnist", tmp_path, limit=5)) == 5
    with pytest.raises(ValueError, match=r"samples \[4, 6\) are outside its 5 samples"):
        open_test_split("mnist", tmp_path, limit=5).read(4, 6)


def test_mnist_reader_refuses_bad_files(tmp_path: Path) -> None:
    _mnist_test(tmp_path)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DatasetFormatError, match="t10k-images-idx3-ubyte: truncated data"):
        open_test_split("mnist", tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        open_test_split("mnist", tmp_path)
    gz_dir = tmp_path / "gz"
    gz_dir.mkdir()
    _mnist_test(gz_dir, gz=True)
    raw = gzip.decompress((gz_dir / "t10k-images-idx3-ubyte.gz").read_bytes())
    (gz_dir / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw[:-784]))  # the last image cut off
    reader = open_test_split("mnist", gz_dir)  # a .gz file is checked where it is read
    assert reader.read(0, N_TEST - 1)[0].shape == (N_TEST - 1, 1, 28, 28)
    with pytest.raises(DatasetFormatError, match="t10k-images-idx3-ubyte.gz: truncated data"):
        reader.read(N_TEST - 1, N_TEST)
    with pytest.raises(ValueError, match="give the folder holding them"):
        open_test_split("mnist")
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        open_test_split("imagenet", tmp_path)


def test_cifar_reader_reads_the_test_batch_alone(tmp_path: Path) -> None:
    rng = np.random.RandomState(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(tmp_path / name, "wb") as f:
            pickle.dump({b"data": rng.randint(0, 256, (6, 3072)).astype(np.uint8),
                         b"labels": rng.randint(0, 10, 6).tolist()}, f)
    whole = load_cifar10(tmp_path)
    for i in range(1, 6):
        (tmp_path / f"data_batch_{i}").unlink()  # the reader never opens a training batch
    reader = open_test_split("cifar10", tmp_path)
    x, y = reader.read(2, 5)
    assert len(reader) == 6 and torch.equal(x, whole.x_test[2:5]) and torch.equal(y, whole.y_test[2:5])


def test_digits_reader_is_the_test_split() -> None:
    d = load_digits()
    reader = open_test_split("digits", limit=50)
    x, y = reader.read(40, 50)
    assert len(reader) == 50 and torch.equal(x, d.x_test[40:50]) and torch.equal(y, d.y_test[40:50])
    assert len(open_test_split("digits", limit=10_000)) == d.num_test


def _mnist_program():
    """Rate-coded 784 -> 10 LIF classifier with dyadic weights (an encoding of its own per sample)."""
    rng = np.random.default_rng(0)
    b = ProgramBuilder()
    b.add("in", Input(shape=(1, 28, 28), signal="spike"))
    b.add("fc", Dense(shape=(10,), in_shape=(1, 28, 28),
                      weight=(rng.integers(-8, 9, (10, 784)) / 64).astype(np.float32)), "in")
    b.add("lif", Population(shape=(10,), beta=np.full(10, 0.5, np.float32), threshold=np.ones(10, np.float32)), "fc")
    b.add("out", Output(shape=(10,)), "lif")
    return b.build({"encoding": {"kind": "rate", "num_steps": 3, "params": {}}})


def test_a_rank_reads_only_its_shard_and_the_report_is_unchanged(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Two ranks simulated in one process (rank, world size and the gather replaced by the test): each reads only
    the rows of its shard, batch by batch, from the IDX files; rank 0's report, made from both
    ranks' parts, equals the one-process report, which equals the report of the tensors in memory."""
    images, labels = _mnist_test(tmp_path)
    program = _mnist_program()
    x = torch.from_numpy(images.astype(np.float32) / np.float32(255)).unsqueeze(1)
    in_memory = evaluate_program(program, x, torch.from_numpy(labels.astype(np.int64)), progress=False)
    one = evaluate_program(program, open_test_split("mnist", tmp_path), batch_size=5, progress=False)
    assert one.accuracy == in_memory.accuracy and one.ops.to_json() == in_memory.ops.to_json()

    reads: list[tuple[str, int, int]] = []
    rows = datasets.read_idx_rows

    def spy(path, start, stop):
        reads.append((Path(path).name, start, stop))
        return rows(path, start, stop)

    monkeypatch.setattr(datasets, "read_idx_rows", spy)
    monkeypatch.setattr(dist_utils, "is_distributed", lambda: True)
    monkeypatch.setattr(dist_utils, "world_size", lambda: 2)
    parts, reads_of = [], {}
    for r in (0, 1):  # each rank alone: what it reads, and its part of the gather
        reads.clear()
        monkeypatch.setattr(dist_utils, "rank", lambda r=r: r)
        monkeypatch.setattr(dist_utils, "all_gather_objects", lambda obj: parts.append(obj) or [obj, obj])
        evaluate_program(program, open_test_split("mnist", tmp_path), batch_size=5, progress=False)
        reads_of[r] = sorted(reads)
    for r, batches in ((0, [(0, 5), (5, 10), (10, 12)]), (1, [(12, 17), (17, 22), (22, 23)])):
        assert reads_of[r] == sorted((f, a, b) for a, b in batches
                                     for f in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"))
    monkeypatch.setattr(dist_utils, "rank", lambda: 0)
    monkeypatch.setattr(dist_utils, "all_gather_objects", lambda obj: list(parts))
    sharded = evaluate_program(program, open_test_split("mnist", tmp_path), batch_size=5, progress=False)
    assert sharded.distributed == {"world_size": 2, "samples_per_rank": [12, 11]}
    assert sharded.accuracy == one.accuracy and sharded.num_samples == one.num_samples == N_TEST
    assert sharded.ops.to_json() == one.ops.to_json()


def test_evaluate_program_takes_samples_or_a_reader() -> None:
    program = _mnist_program()
    reader = SplitReader.from_tensors("s", torch.zeros(2, 1, 28, 28), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="carries its labels"):
        evaluate_program(program, reader, torch.zeros(2, dtype=torch.long), progress=False)
    with pytest.raises(ValueError, match="give the labels y"):
        evaluate_program(program, torch.zeros(2, 1, 28, 28), progress=False)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        evaluate_program(program, reader, batch_size=0, progress=False)
