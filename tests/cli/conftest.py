"""Programs shared by the command-line tests."""
from __future__ import annotations

from pathlib import Path

import pytest

from spike.cli import main


@pytest.fixture(scope="session")
def programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A digits MLP trained for loihi1, compiled in float32 (generic) and in Loihi's fixed point."""
    d = tmp_path_factory.mktemp("programs")
    assert main(["train", "mlp", "--out", str(d / "mlp.pt"), "--epochs", "1", "--hidden", "16", "--steps", "4",
                 "--target", "loihi1", "--quiet"]) == 0
    assert main(["compile", str(d / "mlp.pt"), "--out", str(d / "float.h5")]) == 0
    assert main(["compile", str(d / "mlp.pt"), "--target", "loihi1", "--precision", "fixed",
                 "--out", str(d / "fixed.h5")]) == 0
    return {"float": d / "float.h5", "fixed": d / "fixed.h5"}
