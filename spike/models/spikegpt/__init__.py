"""SpikeGPT, the spiking RWKV language model: the model (``model``), its text data (``text``),
report (``report``) and lowering to the IR (``lowering``, registered with the compiler's frontends
on import). The model's public names are this package's."""
from spike.models.spikegpt import lowering  # noqa: F401  (registers SpikeGPT's frontend)
from spike.models.spikegpt.model import *  # noqa: F401,F403
from spike.models.spikegpt.model import __all__  # noqa: F401
