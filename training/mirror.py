"""Mirror averaging: score a face and its left-right mirror image, and average the two.

A face and its mirror image are equally real or equally manipulated, so a classifier should give them the same
score; a trained one does not quite, and averaging the two views removes that variance. The average is taken over
the backbone's pooled features, before the linear head, which makes the result the mean of the two logits. The
head stays the model's last layer (`probability`), so Platt scaling still folds into it
(`training.calibration.fold_into_model`), and the exported TFLite and SavedModel carry the averaging inside:
serving needs no change, and each crop costs two backbone passes (why the shipped CPU model does without it:
models/default/MODEL_CARD.md, "mirror averaging").
"""

from __future__ import annotations

import tensorflow as tf

from training.architectures import HEAD_DROPOUT_LAYER
from training.calibration import OUTPUT_LAYER

WIDTH_AXIS = 2


def mirror_averaged(model: tf.keras.Model) -> tf.keras.Model:
    """A model scoring `crops` by the mean logit of each crop and its mirror image, sharing `model`'s layers.

    `model` must be built by `training.architectures.build_model` (pooled features -> dropout -> `probability`).
    """
    head = model.get_layer(OUTPUT_LAYER)
    features = tf.keras.Model(model.input, model.get_layer(HEAD_DROPOUT_LAYER).input, name="features")
    crops = tf.keras.Input(shape=model.input_shape[1:], dtype=tf.float32, name="crops")
    mirrored = tf.keras.layers.Lambda(lambda x: tf.reverse(x, axis=[WIDTH_AXIS]), name="mirror")(crops)
    averaged = tf.keras.layers.Average(name="mirror_average")([features(crops), features(mirrored)])
    return tf.keras.Model(crops, head(averaged), name=f"{model.name}_mirror_averaged")
