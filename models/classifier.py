"""Face classifiers: a batch of face crops in, probability of "manipulated" per crop out.

Two backends share one interface. TFLite runs on the CPU through XNNPACK; the TF SavedModel runs on GPU or HPU.
Both pad every batch up to a fixed bucket size (1, 2, 4, ... 32) and slice the result, so an HPU compiles each
shape once and a TFLite interpreter is allocated once per bucket.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from models.devices import Device, require_tensorflow, select_device, tf_device_name
from models.errors import ModelPackageError
from models.package import ModelPackage
from models.tflite_runtime import tflite_interpreter

logger = logging.getLogger(__name__)

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32)


def bucket_for(count: int) -> int:
    """Smallest bucket holding `count` crops (the largest bucket when `count` exceeds it; callers chunk)."""
    for bucket in BATCH_BUCKETS:
        if count <= bucket:
            return bucket
    return BATCH_BUCKETS[-1]


def pad_batch(batch: np.ndarray, size: int) -> np.ndarray:
    """Pad a batch with zero crops up to `size` rows."""
    if len(batch) == size:
        return batch
    padding = np.zeros((size - len(batch), *batch.shape[1:]), dtype=batch.dtype)
    return np.concatenate([batch, padding], axis=0)


class Classifier(ABC):
    """Probability that each face crop is manipulated."""

    backend: str
    device: Device

    def __init__(self, package: ModelPackage) -> None:
        self.package = package
        self.input_size = package.manifest.crop.size

    @property
    def version(self) -> str:
        return self.package.manifest.version

    def predict(self, crops: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 or float32 RGB crops -> (N,) float32 probabilities of "manipulated"."""
        if crops.ndim != 4 or crops.shape[1:] != (self.input_size, self.input_size, 3):
            raise ValueError(
                f"expected crops of shape (N, {self.input_size}, {self.input_size}, 3), got {crops.shape}"
            )
        batch = crops.astype(np.float32, copy=False)
        outputs = []
        largest = BATCH_BUCKETS[-1]
        for start in range(0, len(batch), largest):
            chunk = batch[start : start + largest]
            bucket = bucket_for(len(chunk))
            outputs.append(self._run_bucket(pad_batch(chunk, bucket))[: len(chunk)])
        if not outputs:
            return np.zeros((0,), dtype=np.float32)
        return np.concatenate(outputs).astype(np.float32)

    @abstractmethod
    def _run_bucket(self, batch: np.ndarray) -> np.ndarray:
        """Run one padded batch whose size is a bucket; return (bucket,) probabilities."""


class TFLiteClassifier(Classifier):
    """TFLite interpreter on the CPU (XNNPACK), one interpreter per batch bucket, created on first use."""

    backend = "tflite"
    device: Device = "cpu"

    def __init__(self, package: ModelPackage, num_threads: int = 1) -> None:
        super().__init__(package)
        self.num_threads = num_threads
        self._model_content = package.tflite_path.read_bytes()
        self._interpreters: dict[int, Any] = {}
        self._lock = threading.Lock()
        self._interpreter_for(1)

    def _interpreter_for(self, bucket: int) -> Any:
        interpreter = self._interpreters.get(bucket)
        if interpreter is None:
            try:
                interpreter = tflite_interpreter(
                    model_content=self._model_content, num_threads=self.num_threads
                )
                input_index = interpreter.get_input_details()[0]["index"]
                interpreter.resize_tensor_input(input_index, [bucket, self.input_size, self.input_size, 3])
                interpreter.allocate_tensors()
            except (ValueError, RuntimeError) as exc:
                raise ModelPackageError(
                    f"{self.package.tflite_path}: cannot load TFLite model ({exc})"
                ) from exc
            self._interpreters[bucket] = interpreter
        return interpreter

    def _run_bucket(self, batch: np.ndarray) -> np.ndarray:
        with self._lock:
            interpreter = self._interpreter_for(len(batch))
            interpreter.set_tensor(interpreter.get_input_details()[0]["index"], batch)
            interpreter.invoke()
            output = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
        return np.asarray(output, dtype=np.float32).reshape(len(batch))


class SavedModelClassifier(Classifier):
    """TF SavedModel on a TF device (GPU, HPU or CPU), traced once per batch bucket."""

    backend = "savedmodel"

    def __init__(self, package: ModelPackage, device: Device) -> None:
        super().__init__(package)
        require_tensorflow("the savedmodel backend")
        import tensorflow as tf

        self.device = device
        self._tf = tf
        if not package.saved_model_path.is_dir():
            raise ModelPackageError(f"{package.path}: no saved_model/ folder")
        try:
            with tf.device(tf_device_name(device)):
                self._model = tf.saved_model.load(str(package.saved_model_path))
        except (OSError, ValueError, tf.errors.OpError) as exc:
            raise ModelPackageError(f"{package.saved_model_path}: cannot load SavedModel ({exc})") from exc
        try:
            self._signature = self._model.signatures["serving_default"]
        except KeyError as exc:
            raise ModelPackageError(f"{package.saved_model_path}: no serving_default signature") from exc
        self._input_name = next(iter(self._signature.structured_input_signature[1]))

    def _run_bucket(self, batch: np.ndarray) -> np.ndarray:
        tf = self._tf
        with tf.device(tf_device_name(self.device)):
            outputs = self._signature(**{self._input_name: tf.constant(batch)})
        output = next(iter(outputs.values()))
        return np.asarray(output, dtype=np.float32).reshape(len(batch))


def load_classifier(
    package: ModelPackage, device: str = "auto", backend: str = "auto", num_threads: int = 1
) -> Classifier:
    """Choose the backend for the device: TFLite on CPU, SavedModel on GPU/HPU, unless `backend` says otherwise."""
    resolved = select_device(device)
    if backend == "auto":
        backend = "tflite" if resolved == "cpu" else "savedmodel"
    if backend == "tflite":
        if resolved != "cpu":
            logger.warning("TFLite backend runs on the CPU; device %s is not used", resolved)
        return TFLiteClassifier(package, num_threads=num_threads)
    if backend == "savedmodel":
        return SavedModelClassifier(package, resolved)
    raise ValueError(f"unknown backend {backend!r}; choose auto, tflite or savedmodel")
