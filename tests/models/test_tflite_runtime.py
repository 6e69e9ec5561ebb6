"""LiteRT, the runtime every CPU model now runs on, gives what TensorFlow's own TFLite interpreter gave.

The slim CPU image swaps `tf.lite.Interpreter` for `ai_edge_litert`; serving must not change: the shipped
classifier's probabilities and the bundled MediaPipe models' outputs are compared on the same inputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.bundled import FACE_DETECTION_FULL_RANGE, FACE_DETECTION_SHORT_RANGE, FACE_LANDMARK
from models.classifier import TFLiteClassifier
from models.geometry import Box
from models.package import load_default_package
from models.preprocess import CropSpec, crop_face
from models.reference import reference_face
from models.tflite_runtime import tflite_interpreter

tf = pytest.importorskip("tensorflow", reason="the comparison needs TensorFlow's interpreter (the tf extra)")


def outputs(interpreter: Any, image: np.ndarray) -> list[np.ndarray]:
    interpreter.allocate_tensors()
    index = interpreter.get_input_details()[0]["index"]
    interpreter.set_tensor(index, image)
    interpreter.invoke()
    return [interpreter.get_tensor(o["index"]) for o in interpreter.get_output_details()]


@pytest.mark.parametrize("path", [FACE_DETECTION_SHORT_RANGE, FACE_DETECTION_FULL_RANGE, FACE_LANDMARK])
def test_bundled_mediapipe_models_give_the_same_outputs(path: Path) -> None:
    litert = tflite_interpreter(model_path=str(path))
    litert.allocate_tensors()
    shape = litert.get_input_details()[0]["shape"]
    image = np.random.default_rng(0).uniform(-1, 1, size=shape).astype(np.float32)
    ours, theirs = outputs(litert, image), outputs(tf.lite.Interpreter(model_path=str(path)), image)
    assert len(ours) == len(theirs)
    for mine, reference in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(mine, reference, rtol=1e-5, atol=1e-5)


def test_shipped_classifier_probabilities_match_tensorflow_within_float_tolerance() -> None:
    package = load_default_package()
    size = package.manifest.crop.size
    face = reference_face()
    reference_crop = crop_face(face, Box(0, 0, face.shape[1], face.shape[0]), CropSpec(size=size, margin=0.0))
    noise = np.random.default_rng(1).integers(0, 256, size=(6, size, size, 3)).astype(np.float32)
    crops = np.concatenate([reference_crop[np.newaxis].astype(np.float32), noise])

    ours = TFLiteClassifier(package).predict(crops)
    reference = tf.lite.Interpreter(model_path=str(package.tflite_path))
    input_index = reference.get_input_details()[0]["index"]
    reference.resize_tensor_input(input_index, list(crops.shape))
    theirs = outputs(reference, crops)[0].reshape(len(crops))

    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    assert len(set(np.round(ours, 3))) > 1  # the inputs give different probabilities: the check has teeth
