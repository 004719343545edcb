"""Spiking VGG/ResNet CNNs with FTWT channel gates: the model (``model``), its training (``train``),
the FTWT demo (``demo``) and the lowering of its gated layers to the IR (``lowering``, registered
with the compiler's torch.fx frontend on import)."""
from spike.models.cnn import lowering  # noqa: F401  (registers spike.ftwt.GatedConv's lowering)
from spike.models.cnn.model import DATASET_PRESETS, PRESETS, ResidualBlock, SpikingCNN, count_syn_ops

__all__ = ["PRESETS", "DATASET_PRESETS", "SpikingCNN", "ResidualBlock", "count_syn_ops"]
