"""``torchrun --nproc_per_node 2 spike run ...``: each rank runs a shard of the test samples (of a
SpikeGPT's ``--segments``) and rank 0 writes one report equal, field for field, to the one-process
report."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from spike.cli import main
from helpers.reports import validated
from helpers.spikegpt import tiny_spikegpt

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(args: list[str]) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node=2 -m spike.cli ARGS`` on this machine; it must succeed."""
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_VARS}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", "-m", "spike.cli", *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.parametrize("kind", ["float", "fixed"])
def test_two_processes_write_the_one_process_report(kind: str, programs: dict[str, Path], tmp_path: Path) -> None:
    program = programs[kind]
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    assert main(["run", str(program), "--limit", "51", "--quiet", "--json", str(one)]) == 0
    proc = _torchrun(["run", str(program), "--limit", "51", "--quiet", "--batch-size", "8", "--json", str(two)])
    assert proc.stdout.count("accuracy ") == 1 and "2 processes" in proc.stdout  # rank 0 prints, once
    single, sharded = validated(one), validated(two)
    assert sharded.pop("distributed") == {"world_size": 2, "samples_per_rank": [26, 25]}
    assert "distributed" not in single
    single.pop("timing"), sharded.pop("timing")
    assert sharded == single  # accuracy, every count per node, energy: equal, not close
    assert json.loads(two.read_text())["data"]["samples"] == 51


def test_two_processes_share_a_spikegpt_segments(tmp_path: Path) -> None:
    """``--segments 3`` over two processes (segments 0-1 and 2): rank 0's report is the one-process
    report with three segments: bits per token, every count, energy, firing rates."""
    program, text = tiny_spikegpt(tmp_path)
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    args = ["run", str(program), "--data", str(text), "--tokens", "41", "--segments", "3", "--quiet"]
    assert main([*args, "--json", str(one)]) == 0
    proc = _torchrun([*args, "--json", str(two)])
    assert proc.stdout.count("SpikeGPT run:") == 1 and "3 segments, 2 processes" in proc.stdout
    single, sharded = validated(one), validated(two)
    assert sharded.pop("distributed") == {"world_size": 2, "samples_per_rank": [2, 1]}
    assert "distributed" not in single
    single.pop("timing"), sharded.pop("timing")
    assert sharded == single
    assert single["data"]["segments"] == 3 and single["bits_per_token"] > 0
