"""latentad: unsupervised image anomaly detection over reconstruction, pretrained-feature and self-supervised
latent spaces.

Public API: `create(name, preset=None, **options)`, `load(path)`, `Detector`, `Prediction`.
"""

from latentad import registry
from latentad.detectors.base import Detector, Prediction
from latentad.registry import available_methods, create

__version__ = "0.1.0"


def load(path, device=None, precision=None, backbone=None):
    """Load a saved detector folder (model.safetensors + detector.json), on the CPU or on `device`
    (`backbone`: the user nn.Module a pretrained detector was fitted with)."""
    return registry.load(path, device, precision, backbone)


__all__ = ["Detector", "Prediction", "available_methods", "create", "load", "__version__"]
