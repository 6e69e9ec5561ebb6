"""The seed product's design, kept only as the benchmark's baseline.

Per frame: Haar cascade over the whole frame, every face classified every frame with Keras `model.predict`, and
FaceMesh in static-image mode over the whole frame. This is what FakeWeb Live replaced; never use it to serve.
"""

from __future__ import annotations

from typing import Any

import cv2
import mediapipe as mp
import numpy as np

from models.geometry import Box
from models.package import ModelPackage
from models.preprocess import CropSpec, crop_face
from stream.pipeline.overlay import FaceOverlay, OverlayConfig, draw_overlays
from stream.runtime.timing import StageTimes


def keras_model(package: ModelPackage) -> Any:
    """The package's SavedModel as a Keras model, so the baseline can call `model.predict` like the seed did."""
    import tensorflow as tf

    class ServingLayer(tf.keras.layers.Layer):
        """The serving signature as a layer that owns the loaded SavedModel.

        The signature holds its variables weakly: whatever calls it must keep the loaded object alive, else the
        variables are freed and the first call fails ("a function referencing variables which have been
        deleted").
        """

        def __init__(self, path: str) -> None:
            super().__init__(trainable=False)
            self.loaded = tf.saved_model.load(path)
            self.signature = self.loaded.signatures["serving_default"]
            self.input_name = next(iter(self.signature.structured_input_signature[1]))

        def call(self, crops: Any) -> Any:
            return next(iter(self.signature(**{self.input_name: crops}).values()))

    size = package.manifest.crop.size
    inputs = tf.keras.Input(shape=(size, size, 3), dtype=tf.float32)
    return tf.keras.Model(inputs, ServingLayer(str(package.saved_model_path))(inputs))


class SeedPipeline:
    """The seed design, stage by stage, timed with the same stage names as the real pipeline."""

    def __init__(self, package: ModelPackage, threshold: float) -> None:
        self._cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")  # type: ignore[attr-defined]
        self._model = keras_model(package)
        self._mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=4)
        self._crop = CropSpec(package.manifest.crop.size, package.manifest.crop.margin)
        self._threshold = threshold
        self._overlay = OverlayConfig(mesh_for="all")

    def process(self, image: np.ndarray, times: StageTimes) -> int:
        """Annotate one RGB frame in place; return the number of faces found."""
        with times.measure("detect"):
            gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
            found = self._cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(40, 40))
        boxes = [Box(float(x), float(y), float(x + w), float(y + h)) for x, y, w, h in found]
        probabilities = []
        with times.measure("classify"):
            for box in boxes:
                crop = crop_face(image, box, self._crop)[np.newaxis].astype(np.float32)
                probabilities.append(float(np.ravel(self._model.predict(crop, verbose=0))[0]))
        with times.measure("mesh"):
            result = self._mesh.process(image)
        meshes = _mesh_points(result, image.shape[1], image.shape[0])
        overlays = []
        for index, (box, probability) in enumerate(zip(boxes, probabilities, strict=True)):
            verdict = "manipulated" if probability >= self._threshold else "real"
            landmarks = _closest_mesh(box, meshes)
            overlays.append(FaceOverlay(index, box, probability, verdict, landmarks))
        with times.measure("draw"):
            draw_overlays(image, overlays, self._overlay)
        return len(boxes)

    def close(self) -> None:
        self._mesh.close()


def _mesh_points(result: Any, width: int, height: int) -> list[np.ndarray]:
    return [
        np.array([[p.x * width, p.y * height] for p in face.landmark], dtype=np.float32)
        for face in result.multi_face_landmarks or []
    ]


def _closest_mesh(box: Box, meshes: list[np.ndarray]) -> np.ndarray | None:
    cx, cy = box.center
    best = None
    best_distance = float("inf")
    for mesh in meshes:
        mx, my = mesh.mean(axis=0)
        distance = float(np.hypot(mx - cx, my - cy))
        if distance < best_distance and distance < max(box.width, box.height):
            best, best_distance = mesh, distance
    return best
