"""The tests' tiny model package: a real export by `training.export`, 32x32 crops, a few hundred weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np

TINY_SIZE = 32


def export_tiny_package(out: Path, seed: int = 0) -> Path:
    """Export to `out` a package whose weights come from `seed`; returns its folder.

    Rescaling -> conv -> global pooling -> sigmoid, architecture "tiny-conv", threshold 0.5: fast to export,
    load and run.
    """
    import tensorflow as tf

    from models.preprocess import CropSpec
    from training.export import export_package

    tf.keras.utils.set_random_seed(seed)
    inputs = tf.keras.Input((TINY_SIZE, TINY_SIZE, 3), name="crops")
    features = tf.keras.layers.Rescaling(1.0 / 255.0)(inputs)
    features = tf.keras.layers.Conv2D(4, 3, strides=2, activation="relu")(features)
    pooled = tf.keras.layers.GlobalAveragePooling2D()(features)
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(1, activation="sigmoid")(pooled))
    check = np.random.default_rng(seed).uniform(0, 255, (2, TINY_SIZE, TINY_SIZE, 3)).astype(np.float32)
    return export_package(model, out, CropSpec(size=TINY_SIZE), 0.5, "tiny-conv", {}, {}, check).path


def with_threshold(package: Path, out: Path, threshold: float) -> Path:
    """A copy of `package` at `out` whose manifest has `threshold` (0.01: every face "manipulated"; 0.9: the
    tiny model's ~0.5 is "real")."""
    import dataclasses
    import shutil

    from models.manifest import MANIFEST_NAME
    from models.package import ModelPackage

    shutil.copytree(package, out)
    manifest = dataclasses.replace(ModelPackage.load(out).manifest, threshold=threshold)
    (out / MANIFEST_NAME).write_text(manifest.to_json(), encoding="utf-8")
    return out
