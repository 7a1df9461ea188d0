"""Family B: detectors on frozen ImageNet features (offline EfficientNet-Lite / MobileNetV2 backbones).

    gaussian   GaussianAD  Rippel et al. 2020: pooled features, Ledoit-Wolf Gaussian per level
    padim      PaDiM       Defard et al. 2021: a Gaussian per patch position
    patchcore  PatchCore   Roth et al. 2022: coreset memory bank, nearest-neighbour distance
    simplenet  SimpleNet   Liu et al. 2023: feature adaptor + discriminator against noised features

`latentad.load(path, backbone=module)` reloads a detector fitted with a user nn.Module backbone.
"""

from latentad.detectors.pretrained.common import PretrainedConfig, PretrainedDetector

__all__ = ["PretrainedConfig", "PretrainedDetector"]
