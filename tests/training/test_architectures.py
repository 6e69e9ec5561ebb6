"""Architectures: shape and range of the output, scaling inside the model, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from training.architectures import ARCHITECTURES, BATCH_NORM_MOMENTUM, DEFAULT_ARCHITECTURE, build_model
from training.backbones.weights import BackboneWeightsError

# FaceRes comes as a graph with batch norm folded into its convolutions: it has no batch-norm layer to tune.
FOLDED_BATCH_NORM = {"mobilenet_v1_faceres"}


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_model_contract(name: str) -> None:
    try:
        model = build_model(name, 32)
    except BackboneWeightsError as exc:
        pytest.skip(f"pretrained weights not installed: {exc}")
    crops = np.random.default_rng(0).uniform(0, 255, size=(3, 32, 32, 3)).astype(np.float32)
    for training in (False, True):
        output = model(crops, training=training).numpy()
        assert output.shape == (3, 1)
        assert output.dtype == np.float32
        assert np.all((output >= 0.0) & (output <= 1.0))
    assert model.input_shape == (None, 32, 32, 3)
    # scaling from [0, 255] is inside the model; batch norm statistics follow a short from-scratch run
    assert any(isinstance(layer, tf.keras.layers.Rescaling) for layer in model.layers)
    norms = [layer for layer in model.layers if isinstance(layer, tf.keras.layers.BatchNormalization)]
    assert bool(norms) != (name in FOLDED_BATCH_NORM)
    assert all(layer.momentum == BATCH_NORM_MOMENTUM for layer in norms)


def test_default_is_small() -> None:
    assert DEFAULT_ARCHITECTURE == "mobilenet_v3_small"
    assert build_model(DEFAULT_ARCHITECTURE, 32).count_params() < 1_500_000


def test_unknown_architecture_lists_choices() -> None:
    with pytest.raises(ValueError, match="resnet9000.*mobilenet_v3_small"):
        build_model("resnet9000", 64)


def test_too_small_input_is_rejected() -> None:
    with pytest.raises(ValueError, match=">= 32"):
        build_model(DEFAULT_ARCHITECTURE, 16)
