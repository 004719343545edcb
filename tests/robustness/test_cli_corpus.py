"""Bad input and faults through the command line, as a generated corpus (issue: nothing runs,
nothing is lost, every error is clear).

Every case builds its inputs in a fresh folder beside a trained checkpoint and its compiled
program, runs ``spike ...``, and checks the exit code 2, one line on stderr naming the file or
field and what was expected, no traceback, and that no file that existed before changed.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import pytest
import torch

from spike.atomic import atomic_write, remove_stale_temporaries
from spike.cli import error_message, main
from spike.compiler.io.hdf5 import load_program
from spike.train.checkpoint import CheckpointError, load_checkpoint


class _MakeFolder:
    """Pickles to ``os.mkdir(path)``: what a malicious pickle runs when it is loaded unrestricted."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return os.mkdir, (self.path,)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a trained MLP checkpoint (``mlp.pt``) and its program (``prog.h5``)."""
    folder = tmp_path_factory.mktemp("corpus")
    assert main(["train", "mlp", "--out", str(folder / "mlp.pt"), "--epochs", "1", "--hidden", "16",
                 "--steps", "4", "--quiet"]) == 0
    assert main(["compile", str(folder / "mlp.pt"), "--out", str(folder / "prog.h5")]) == 0
    return folder


@pytest.fixture
def work(base: Path, tmp_path: Path) -> Path:
    for name in ("mlp.pt", "prog.h5"):
        shutil.copy(base / name, tmp_path / name)
    return tmp_path


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _cifar_folder(folder: Path, payload_in: str | None = None, marker: Path | None = None) -> Path:
    """CIFAR-10 python batches (4 images each); ``payload_in`` names the batch that also holds a
    pickled :class:`_MakeFolder` of ``marker``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.randint(0, 256, (4, 3072)).astype(np.uint8), b"labels": [1, 2, 3, 4]}
        if name == payload_in:
            batch[b"filenames"] = _MakeFolder(marker)
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    return folder


# --------------------------------------------------------------------------- the corpus


@dataclass(frozen=True)
class Case:
    """``make(folder) -> argv`` builds the inputs; the run must exit 2 with ``message`` on stderr."""

    make: Callable[[Path], list[str]]
    message: str
    absent: str | None = None  # a path (relative to the folder) that must not exist afterwards


def _cifar_payload(w: Path) -> list[str]:
    _cifar_folder(w / "cifar", payload_in="data_batch_1", marker=w / "pwned")
    return ["train", "mlp", "--dataset", "cifar10", "--data-root", str(w / "cifar"), "--out", str(w / "c.pt")]


def _checkpoint_names_data(w: Path) -> list[str]:
    _cifar_folder(w / "cifar", payload_in="test_batch", marker=w / "pwned")
    ck = load_checkpoint(w / "mlp.pt")
    ck["config"].update(dataset="cifar10", data_root=str(w / "cifar"))
    torch.save(ck, w / "evil.pt")
    return ["compile", str(w / "evil.pt"), "--out", str(w / "evil.h5")]


def _torch_payload(w: Path) -> list[str]:
    torch.save({"model_state": {}, "x": _MakeFolder(w / "pwned")}, w / "payload.pt")
    return ["compile", str(w / "payload.pt"), "--out", str(w / "x.h5")]


def _text_as_checkpoint(w: Path) -> list[str]:
    (w / "notes.txt").write_text("hello")
    return ["compile", str(w / "notes.txt"), "--out", str(w / "p2.h5")]


def _out_is_a_folder(w: Path) -> list[str]:
    (w / "d").mkdir()
    return ["compile", str(w / "mlp.pt"), "--out", str(w / "d")]


def _flipped_weights(w: Path) -> list[str]:
    program = load_program(w / "prog.h5")
    weights = next(n.weight for _, n in program.nodes() if getattr(n, "weight", None) is not None)
    raw = bytearray((w / "prog.h5").read_bytes())
    at = bytes(raw).find(weights.tobytes()[:256])
    assert at > 0
    raw[at + 64: at + 128] = bytes(b ^ 0x5A for b in raw[at + 64: at + 128])
    (w / "flipped.h5").write_bytes(bytes(raw))
    return ["run", str(w / "flipped.h5"), "--limit", "4", "--quiet"]


def _edited_gain(w: Path) -> list[str]:
    shutil.copy(w / "prog.h5", w / "edited.h5")
    with h5py.File(w / "edited.h5", "r+") as f:  # not re-sealed: an edit the file's header does not know
        group = next(g for g in f["nodes"].values() if g.attrs["kind"] == "population")
        group.attrs["gain"] = np.float64(group.attrs["gain"]) * 2
    return ["run", str(w / "edited.h5"), "--limit", "4", "--quiet"]


def _empty_mnist(w: Path) -> list[str]:
    folder = w / "mnist"
    folder.mkdir()
    for name, dims in (("train-images-idx3-ubyte", (0, 28, 28)), ("t10k-images-idx3-ubyte", (0, 28, 28)),
                       ("train-labels-idx1-ubyte", (0,)), ("t10k-labels-idx1-ubyte", (0,))):
        header = bytes([0, 0, 0x08, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)
        (folder / name).write_bytes(header)
    return ["train", "mlp", "--dataset", "mnist", "--data-root", str(folder), "--out", str(w / "m.pt")]


def _other_steps_on_resume(w: Path) -> list[str]:
    return ["train", "mlp", "--out", str(w / "mlp.pt"), "--resume", "--epochs", "2", "--hidden", "16",
            "--steps", "6", "--quiet"]


def _other_batch_on_resume(w: Path) -> list[str]:
    return ["train", "mlp", "--out", str(w / "mlp.pt"), "--resume", "--epochs", "2", "--hidden", "16",
            "--steps", "4", "--batch-size", "32", "--quiet"]


CASES = {
    "cifar10 batch with a code payload": Case(_cifar_payload, r"data_batch_1: not a readable CIFAR-10 pickle batch "
                                              r"\(UnpicklingError: refused global posix.mkdir", absent="pwned"),
    "checkpoint naming its own data folder": Case(
        _checkpoint_names_data, r"evil.pt: trained on cifar10: dataset 'cifar10' is read from files: give the "
                                r"folder holding them \(--data-root\)", absent="pwned"),
    "checkpoint with a code payload": Case(_torch_payload, r"payload.pt holds Python objects beyond tensors and "
                                                           r"plain values \(posix.mkdir\)", absent="pwned"),
    "program given as a checkpoint": Case(lambda w: ["compile", str(w / "prog.h5"), "--out", str(w / "p2.h5")],
                                          r"prog.h5 is an HDF5 file \(a compiled program or a NIR graph\), not a "
                                          r"checkpoint"),
    "text file given as a checkpoint": Case(_text_as_checkpoint, r"notes.txt is not a PyTorch checkpoint"),
    "--out names a folder": Case(_out_is_a_folder, r"--out .*/d: is a folder; give a file path"),
    "--json under a file": Case(lambda w: ["run", str(w / "prog.h5"), "--json", str(w / "mlp.pt" / "r.json")],
                                r"--json .*mlp.pt/r.json: .*mlp.pt is a file, not a folder"),
    "flipped bytes in a weight array": Case(_flipped_weights, r"flipped.h5: the bytes do not match the sha256 in the file's header"),
    "a gain edited after compiling": Case(_edited_gain, r"edited.h5: the bytes do not match the sha256"),
    "MNIST files with 0 images": Case(_empty_mnist, r"train-images-idx3-ubyte: holds 0 images"),
    "resume with other steps": Case(_other_steps_on_resume, r"mlp.pt: resuming with a different configuration "
                                                            r"\(encoding.num_steps=6, num_steps=6; the checkpoint has encoding.num_steps=4, num_steps=4\)"),
    "resume with another batch size": Case(_other_batch_on_resume, r"trainer.batch_size=32; the checkpoint has "
                                                                   r"trainer.batch_size=64"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_refused_with_one_clear_line(name: str, work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    case = CASES[name]
    argv = case.make(work)
    before = _snapshot(work)
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"spike {argv[0]}") and ": error: " in err, err
    assert re.search(case.message, err), f"{case.message!r} not in {err!r}"
    assert _snapshot(work) == before, "an existing file changed"
    assert case.absent is None or not (work / case.absent).exists(), "the payload ran"


def test_debug_shows_the_traceback(work: Path) -> None:
    (work / "notes.txt").write_text("hello")
    with pytest.raises(CheckpointError, match="is not a PyTorch checkpoint"):
        main(["compile", str(work / "notes.txt"), "--out", str(work / "p.h5"), "--debug"])


def test_cifar_batches_of_every_pickle_protocol_load(tmp_path: Path) -> None:
    from spike.train.datasets import load_cifar10

    rng = np.random.RandomState(1)
    written = {}
    for protocol, name in zip((2, 3, 4, 5, 5, 2), [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        batch = {b"batch_label": name.encode(), b"data": rng.randint(0, 256, (3, 3072)).astype(np.uint8),
                 b"labels": [int(v) for v in rng.randint(0, 10, 3)], b"filenames": [b"a.png", b"b.png", b"c.png"]}
        (tmp_path / name).write_bytes(pickle.dumps(batch, protocol=protocol))
        written[name] = batch
    data = load_cifar10(tmp_path)
    expected = np.concatenate([written[f"data_batch_{i}"][b"data"] for i in range(1, 6)])
    assert np.array_equal((data.x_train.numpy().reshape(15, 3072) * 255).round().astype(np.uint8), expected)
    assert data.y_test.tolist() == written["test_batch"][b"labels"]


# --------------------------------------------------------------------------- faults outside the input


def _spike(*argv: str, limit_bytes: int | None = None, **kw) -> subprocess.CompletedProcess:
    """``spike ARGV`` in a child process; ``limit_bytes``: no file may grow past it (a full disk)."""
    setup = ""
    if limit_bytes is not None:
        setup = ("import resource, signal; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
                 f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit_bytes}, {limit_bytes})); ")
    code = setup + "import sys; from spike.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=300, **kw)


@pytest.mark.parametrize("command", ["compile", "run --json", "train"])
def test_a_full_disk_keeps_the_old_file_and_leaves_no_temporary(command: str, work: Path) -> None:
    target = {"compile": "prog.h5", "run --json": "report.json", "train": "mlp.pt"}[command]
    (work / "report.json").write_text("{}\n")
    argv = {"compile": ["compile", str(work / "mlp.pt"), "--out", str(work / "prog.h5")],
            "run --json": ["run", str(work / "prog.h5"), "--limit", "4", "--quiet", "--json", str(work / "report.json")],
            "train": ["train", "mlp", "--out", str(work / "mlp.pt"), "--epochs", "1", "--hidden", "16", "--steps", "4",
                      "--quiet"]}[command]
    before = _snapshot(work)
    result = _spike(*argv, limit_bytes=1024)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and f"{target}: File too large" in result.stderr, result.stderr
    assert _snapshot(work) == before
    assert not [p for p in work.iterdir() if p.name.endswith(".tmp")]


def test_a_closed_pipe_still_writes_the_report(work: Path) -> None:
    code = "import sys; from spike.cli import main; sys.exit(main(sys.argv[1:]))"
    report = work / "report.json"
    child = subprocess.Popen([sys.executable, "-c", code, "run", str(work / "prog.h5"), "--limit", "8", "--quiet",
                              "--json", str(report)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    child.stdout.close()  # the reader goes away before the first line (`spike run ... | head -0`)
    err = child.stderr.read().decode()
    assert child.wait(timeout=300) == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert '"accuracy"' in report.read_text()


def test_the_next_write_removes_the_temporary_of_a_killed_writer(tmp_path: Path) -> None:
    target = tmp_path / "ckpt.pt"
    code = ("import sys, time; from spike.atomic import atomic_write; "
            "atomic_write(sys.argv[1], lambda f: (f.write(b'x' * 4096), f.flush(), time.sleep(60)))")
    child = subprocess.Popen([sys.executable, "-c", code, str(target)])
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".ckpt.pt.*.tmp")) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    left = list(tmp_path.glob(".ckpt.pt.*.tmp"))
    assert len(left) == 1 and not target.exists()
    other = tmp_path / ".ckpt.pt.1@elsewhere.abc.tmp"  # another machine's writer (shared folder): kept
    other.write_bytes(b"y")
    atomic_write(target, lambda f: f.write(b"done"))
    assert target.read_bytes() == b"done"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([other.name, "ckpt.pt"])
    assert remove_stale_temporaries(target) == []


def test_an_unwritable_folder_is_refused_before_any_work(work: Path, monkeypatch, capsys) -> None:
    """(As root every folder is writable, so the permission is taken away by ``os.access``.)"""
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == work / "ro" else real_access(p, mode))
    (work / "ro").mkdir()
    before = _snapshot(work)
    assert main(["compile", str(work / "mlp.pt"), "--out", str(work / "ro" / "p.h5")]) == 2
    assert capsys.readouterr().err.strip() == (f"spike compile: error: --out {work / 'ro' / 'p.h5'}: cannot write in "
                                               f"{work / 'ro'} (permission denied)")
    assert _snapshot(work) == before


@pytest.mark.parametrize("exc, line", [
    (PermissionError(13, "Permission denied", "/data/p.h5"), "/data/p.h5: Permission denied"),
    (OSError(28, "No space left on device", "/data/p.h5"), "/data/p.h5: No space left on device"),
    (MemoryError(), "out of memory (use a smaller batch, model or input)"),
    (ValueError("first line\n  second line"), "first line; second line"),
])
def test_expected_failures_read_as_one_line(exc: BaseException, line: str) -> None:
    assert error_message(exc) == line
