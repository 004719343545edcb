"""The distribution installs the `spike` package (the core, spike/compiler, spike/backends,
spike/models, the hardware configs), both as the editable install the Makefile makes and as a
normal wheel."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

from helpers import ROOT

CHECK = (
    "import spike, spike.compiler, spike.backends, spike.models, spike.hw_configs, spike.cli\n"
    "import sys; print(spike.__file__); print(spike.compiler.__file__); print(spike.models.__file__)\n"
)


def test_editable_install_imports_the_source_tree() -> None:
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, check=True,
                         cwd="/").stdout.split()
    assert Path(out[0]) == ROOT / "spike" / "__init__.py"
    assert Path(out[1]) == ROOT / "spike" / "compiler" / "__init__.py"
    assert Path(out[2]) == ROOT / "spike" / "models" / "__init__.py"


def test_wheel_installs_every_package(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
         str(tmp_path / "dist"), str(ROOT)],
        check=True, capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for expected in ("spike/__init__.py", "spike/compiler/__init__.py", "spike/backends/__init__.py",
                     "spike/models/__init__.py", "spike/models/spikegpt/model.py", "spike/backends/lava/plan.py",
                     "spike/compat/lava.py", "spike/hw_configs/loihi1.yaml"):
        assert expected in names
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, check=True,
                         cwd="/", env=env).stdout.split()
    assert all(Path(p).is_relative_to(target) for p in out), out
    assert (target / "bin" / "spike").exists()  # console script
