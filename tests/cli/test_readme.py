"""The README's command-line walkthrough runs as written: every command of its first block under
"## Command line", in order, in a fresh folder (``train`` and ``demo`` get ``--epochs 2``, as the
README says, to keep the suite fast). A command that fails fails the test with its output."""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ROOT

FAST = {"train": ["--epochs", "2"], "demo": ["--epochs", "2"]}


def readme_commands() -> list[list[str]]:
    """The commands of the README's command-line block, comments removed."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Command line\n", 1)[1]
    block = section.split("```", 2)[1]
    commands = []
    for line in block.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            commands.append(shlex.split(line))
    return commands


def test_the_block_is_the_walkthrough() -> None:
    commands = readme_commands()
    assert commands and all(c[0] == "spike" for c in commands)
    assert [c[1] for c in commands][:3] == ["train", "compile", "run"]


@pytest.mark.late
@pytest.mark.timeout(900)
def test_readme_commands_run_as_written(tmp_path: Path) -> None:
    spike = Path(sys.executable).with_name("spike")
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    for cmd in readme_commands():
        argv = [str(spike), *cmd[1:], *FAST.get(cmd[1], [])]
        proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, f"`{shlex.join(cmd)}` exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
