"""spike: train spiking networks, compile them to an event-driven IR, run and count them."""
from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("spike-sim")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.1.0"
# spiking neurons and surrogate gradients (spike/neurons.py, spike/surrogate.py)
from spike import surrogate  # noqa: E402
from spike.kernels.lif import lif_multistep  # noqa: E402
from spike.neurons import IF, LI, LIF, CubaLIF, lif_step  # noqa: E402
