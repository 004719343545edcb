import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from spike.train.datasets import (
    Dataset,
    DatasetFormatError,
    batches,
    load_cifar10,
    load_dataset,
    load_digits,
    load_mnist,
    read_idx,
)

# ----------------------------------------------------------------------------- helpers


def idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    dt = {0x08: ">u1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4"}[code]
    header = bytes([0, 0, code, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return header + arr.astype(dt).tobytes()


def write(path: Path, data: bytes, gz: bool = False) -> Path:
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


def make_mnist(folder: Path, n_train: int = 5, n_test: int = 3, gz: bool = False, seed: int = 0) -> dict:
    rng = np.random.RandomState(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.randint(0, 256, (n_train, 28, 28)).astype(np.uint8),
        "train-labels-idx1-ubyte": rng.randint(0, 10, n_train).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.randint(0, 256, (n_test, 28, 28)).astype(np.uint8),
        "t10k-labels-idx1-ubyte": rng.randint(0, 10, n_test).astype(np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, arr in arrays.items():
        write(folder / name, idx_bytes(arr), gz)
    return arrays


def make_cifar(folder: Path, n: int = 4, seed: int = 0) -> dict:
    rng = np.random.RandomState(seed)
    folder.mkdir(parents=True, exist_ok=True)
    batches_ = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        b = {
            b"batch_label": name.encode(),
            b"data": rng.randint(0, 256, (n, 3072)).astype(np.uint8),
            b"labels": rng.randint(0, 10, n).tolist(),
        }
        with open(folder / name, "wb") as f:
            pickle.dump(b, f)
        batches_[name] = b
    return batches_


# ----------------------------------------------------------------------------- digits


def test_digits_shapes_values_and_fixed_split():
    d = load_digits()
    assert isinstance(d, Dataset) and d.name == "digits"
    assert d.input_shape == (1, 8, 8) and d.num_classes == 10
    assert d.x_train.shape == (1438, 1, 8, 8) and d.x_test.shape == (359, 1, 8, 8)
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    for x in (d.x_train, d.x_test):
        assert x.min() >= 0 and x.max() <= 1
        assert torch.equal(x * 16, torch.round(x * 16))  # exact multiples of 1/16
    for y in (d.y_train, d.y_test):
        assert set(y.tolist()) == set(range(10))
    # stratified: each class ~20% in test
    frac = d.y_test.bincount(minlength=10).float() / (d.y_test.bincount(minlength=10) + d.y_train.bincount(minlength=10))
    assert torch.all((frac - 0.2).abs() < 0.01)
    again = load_digits()
    for name in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(d, name), getattr(again, name))
    other = load_digits(seed=1)
    assert not torch.equal(d.y_test, other.y_test) or not torch.equal(d.x_test, other.x_test)


def test_digits_split_is_disjoint_and_complete():
    from sklearn.datasets import load_digits as sk

    d = load_digits()
    full = torch.from_numpy(sk().images.astype(np.float32) / 16).unsqueeze(1)
    assert d.num_train + d.num_test == full.shape[0]
    # every image of the union appears the right number of times
    keys = lambda x: sorted(map(bytes, x.reshape(x.shape[0], -1).numpy().view(np.uint8).reshape(x.shape[0], -1)))
    assert keys(torch.cat([d.x_train, d.x_test])) == keys(full)


# ----------------------------------------------------------------------------- MNIST


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_round_trip(tmp_path, gz):
    arrays = make_mnist(tmp_path, gz=gz)
    d = load_mnist(tmp_path)
    assert d.name == "mnist" and d.input_shape == (1, 28, 28) and d.num_classes == 10
    assert d.x_train.shape == (5, 1, 28, 28) and d.x_test.shape == (3, 1, 28, 28)
    assert d.x_train.dtype == torch.float32 and d.y_test.dtype == torch.int64
    np.testing.assert_array_equal(d.x_train[:, 0].numpy(), arrays["train-images-idx3-ubyte"] / np.float32(255))
    np.testing.assert_array_equal(d.x_test[:, 0].numpy() * 255, arrays["t10k-images-idx3-ubyte"].astype(np.float32))
    np.testing.assert_array_equal(d.y_train.numpy(), arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(d.y_test.numpy(), arrays["t10k-labels-idx1-ubyte"])
    assert load_dataset("MNIST", tmp_path).num_train == 5


def test_mnist_torchvision_layout(tmp_path):
    make_mnist(tmp_path / "MNIST" / "raw")
    assert load_mnist(tmp_path).num_test == 3


@pytest.mark.parametrize("code", [0x0B, 0x0C, 0x0D])
def test_read_idx_other_dtypes(tmp_path, code):
    arr = (np.arange(24).reshape(2, 3, 4) - 7).astype(np.float32 if code == 0x0D else np.int32)
    p = write(tmp_path / "a.idx", idx_bytes(arr, code))
    out = read_idx(p)
    np.testing.assert_array_equal(out, arr)
    assert out.dtype.isnative


def _assert_bad_file_named(tmp_path, make, load, name, data=None):
    """``load`` of the folder ``make`` wrote with its file ``name`` removed (``data`` None: a
    FileNotFoundError) or holding the bytes ``data`` (a ``.gz`` name: instead of the plain file):
    the error names the file."""
    make(tmp_path)
    path = tmp_path / name
    if data is None or name.endswith(".gz"):
        (tmp_path / name.removesuffix(".gz")).unlink()
    if data is not None:
        path.write_bytes(data)
    with pytest.raises(FileNotFoundError if data is None else DatasetFormatError) as e:
        load(tmp_path)
    assert str(path) in str(e.value)


def _corrupt(tmp_path, name, data):
    make_mnist(tmp_path)
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(DatasetFormatError) as e:
        load_mnist(tmp_path)
    assert str(path) in str(e.value)
    return str(e.value)


def test_mnist_truncated(tmp_path):
    full = idx_bytes(np.zeros((5, 28, 28), np.uint8))
    msg = _corrupt(tmp_path, "train-images-idx3-ubyte", full[:-10])
    assert "truncated" in msg and "3920" in msg and "3910" in msg


def test_mnist_truncated_header(tmp_path):
    msg = _corrupt(tmp_path, "t10k-labels-idx1-ubyte", bytes([0, 0, 8, 1, 0]))
    assert "header" in msg


def test_mnist_bad_magic(tmp_path):
    data = bytearray(idx_bytes(np.zeros((5, 28, 28), np.uint8)))
    data[2] = 0x42
    msg = _corrupt(tmp_path, "train-images-idx3-ubyte", bytes(data))
    assert "magic" in msg


def test_mnist_wrong_dims(tmp_path):
    msg = _corrupt(tmp_path, "train-images-idx3-ubyte", idx_bytes(np.zeros((5, 27, 28), np.uint8)))
    assert "(N, 28, 28)" in msg and "(5, 27, 28)" in msg


def test_mnist_label_count_mismatch(tmp_path):
    msg = _corrupt(tmp_path, "train-labels-idx1-ubyte", idx_bytes(np.zeros(4, np.uint8)))
    assert "expected 5 labels" in msg and "found 4" in msg


def test_mnist_bad_gzip(tmp_path):
    _assert_bad_file_named(tmp_path, make_mnist, load_mnist, "t10k-images-idx3-ubyte.gz", b"not gzip at all")


def test_mnist_missing_file(tmp_path):
    _assert_bad_file_named(tmp_path, make_mnist, load_mnist, "t10k-labels-idx1-ubyte")


# ----------------------------------------------------------------------------- CIFAR-10


@pytest.mark.parametrize("subdir", [False, True])
def test_cifar_round_trip(tmp_path, subdir):
    folder = tmp_path / "cifar-10-batches-py" if subdir else tmp_path
    written = make_cifar(folder)
    d = load_cifar10(tmp_path)
    assert d.name == "cifar10" and d.input_shape == (3, 32, 32)
    assert d.x_train.shape == (20, 3, 32, 32) and d.x_test.shape == (4, 3, 32, 32)
    train = np.concatenate([written[f"data_batch_{i}"][b"data"] for i in range(1, 6)])
    np.testing.assert_array_equal(d.x_train.reshape(20, -1).numpy(), train / np.float32(255))
    np.testing.assert_array_equal(d.x_test.numpy().reshape(4, 3072) * 255, written["test_batch"][b"data"])
    # channel-major layout: red plane first
    assert d.x_test[1, 0, 0, 1] * 255 == written["test_batch"][b"data"][1, 1]
    assert d.x_test[1, 2, 31, 31] * 255 == written["test_batch"][b"data"][1, 3071]
    labels = sum((written[f"data_batch_{i}"][b"labels"] for i in range(1, 6)), [])
    assert d.y_train.tolist() == labels and d.y_train.dtype == torch.int64
    assert load_dataset("cifar10", tmp_path).num_test == 4


def _bad_batch(tmp_path, batch):
    make_cifar(tmp_path)
    path = tmp_path / "data_batch_3"
    with open(path, "wb") as f:
        pickle.dump(batch, f)
    with pytest.raises(DatasetFormatError) as e:
        load_cifar10(tmp_path)
    assert str(path) in str(e.value)
    return str(e.value)


def test_cifar_missing_key(tmp_path):
    msg = _bad_batch(tmp_path, {b"data": np.zeros((2, 3072), np.uint8)})
    assert "labels" in msg


def test_cifar_bad_shape(tmp_path):
    msg = _bad_batch(tmp_path, {b"data": np.zeros((2, 3000), np.uint8), b"labels": [0, 1]})
    assert "(N, 3072)" in msg and "(2, 3000)" in msg


def test_cifar_label_count_mismatch(tmp_path):
    msg = _bad_batch(tmp_path, {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1, 2]})
    assert "expected 2 labels" in msg


def test_cifar_not_a_dict_and_not_a_pickle(tmp_path):
    _bad_batch(tmp_path, [1, 2, 3])
    _assert_bad_file_named(tmp_path, make_cifar, load_cifar10, "test_batch", b"\x80\x04garbage")


def test_cifar_missing_file(tmp_path):
    _assert_bad_file_named(tmp_path, make_cifar, load_cifar10, "data_batch_5")


# ----------------------------------------------------------------------------- dispatch, batches


def test_load_dataset_errors(tmp_path):
    assert load_dataset("digits").name == "digits"
    with pytest.raises(ValueError, match="digits, mnist, cifar10"):
        load_dataset("imagenet")
    with pytest.raises(ValueError, match="root"):
        load_dataset("mnist")
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_dataset("mnist", tmp_path)


def test_batches_cover_and_reproducible():
    x = torch.arange(10).float().unsqueeze(1)
    y = torch.arange(10)
    plain = list(batches(x, y, 4))
    assert [len(b[1]) for b in plain] == [4, 4, 2]
    assert torch.equal(torch.cat([b[1] for b in plain]), y)
    a = list(batches(x, y, 3, shuffle=True, generator=torch.Generator().manual_seed(1)))
    b = list(batches(x, y, 3, shuffle=True, generator=torch.Generator().manual_seed(1)))
    assert all(torch.equal(p[1], q[1]) for p, q in zip(a, b))
    order = torch.cat([yb for _, yb in a])
    assert sorted(order.tolist()) == list(range(10)) and not torch.equal(order, y)
    assert all(torch.equal(xb[:, 0].long(), yb) for xb, yb in a)
    assert [len(b[1]) for b in batches(x, y, 4, drop_last=True)] == [4, 4]
    with pytest.raises(ValueError):
        list(batches(x, y[:5], 2))
