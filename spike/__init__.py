"""spike: train spiking networks, compile them to an event-driven IR, run and count them."""
from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("spike-sim")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.1.0"
