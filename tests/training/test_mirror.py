"""Mirror averaging: the averaged model scores a crop and its mirror image alike, by the mean of the two logits
of the model it wraps, and Platt scaling still folds into its head."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from training.architectures import DEFAULT_ARCHITECTURE, HEAD_DROPOUT_LAYER, build_model
from training.calibration import OUTPUT_LAYER, Platt, fold_into_model
from training.mirror import mirror_averaged


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p) - np.log1p(-p)


def _asymmetric_model() -> tf.keras.Model:
    """A small classifier shaped like `build_model`'s (pooled features, `head_dropout`, `probability`) that
    scores a crop and its mirror image differently."""
    tf.keras.utils.set_random_seed(4)
    crops = tf.keras.Input((32, 32, 3), name="crops")
    features = tf.keras.layers.GlobalAveragePooling2D()(
        tf.keras.layers.Conv2D(8, 3, strides=2)(crops / 255.0)
    )
    features = tf.keras.layers.Dropout(0.2, name=HEAD_DROPOUT_LAYER)(features)
    probability = tf.keras.layers.Dense(1, activation="sigmoid", name=OUTPUT_LAYER)(features)
    return tf.keras.Model(crops, probability)


def test_scores_a_crop_and_its_mirror_image_by_their_mean_logit() -> None:
    model = _asymmetric_model()
    crops = np.random.default_rng(6).uniform(0, 255, (6, 32, 32, 3)).astype(np.float32)
    mirrored = crops[:, :, ::-1].copy()
    plain, plain_mirrored = model(crops).numpy().ravel(), model(mirrored).numpy().ravel()
    assert np.max(np.abs(plain - plain_mirrored)) > 1e-4  # otherwise the test could not fail

    averaged = mirror_averaged(model)
    scores = averaged(crops).numpy().ravel()
    np.testing.assert_allclose(averaged(mirrored).numpy().ravel(), scores, atol=1e-6)
    np.testing.assert_allclose(_logit(scores), (_logit(plain) + _logit(plain_mirrored)) / 2, atol=1e-3)
    assert averaged.count_params() == model.count_params()  # the same layers, not a copy


def test_wraps_the_shipped_kind_of_model() -> None:
    model = build_model(DEFAULT_ARCHITECTURE, 32)
    averaged = mirror_averaged(model)
    assert averaged.input_shape == model.input_shape and averaged.output_shape == model.output_shape
    assert averaged.layers[-1] is model.get_layer(OUTPUT_LAYER)


def test_platt_scaling_folds_into_the_averaged_models_head() -> None:
    averaged = mirror_averaged(_asymmetric_model())
    crops = np.random.default_rng(7).uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)
    raw = averaged(crops).numpy().ravel()
    platt = Platt(slope=0.6, intercept=0.3)
    fold_into_model(averaged, platt)
    np.testing.assert_allclose(averaged(crops).numpy().ravel(), platt.apply(raw), atol=1e-5)
