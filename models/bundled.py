"""The face models shipped inside the mediapipe wheel, run as plain single-threaded TFLite interpreters.

MediaPipe's own graphs (`mp.solutions`) run each model on a thread pool of their own and wake it for every call:
at 30 calls a second per stream that costs more than the models themselves. The same .tflite files run in the
calling thread by a TFLite interpreter with one thread (which releases the GIL while it runs) cost about half.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from models.errors import ModelPackageError
from models.tflite_runtime import tflite_interpreter


def _mediapipe_dir() -> Path:
    """The installed mediapipe package's folder, found without importing mediapipe.

    Serving reads only files from the wheel; importing mediapipe would load matplotlib, OpenCV's GUI build and
    more, which the slim CPU image (Dockerfile) does not install.
    """
    spec = importlib.util.find_spec("mediapipe")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("mediapipe==0.10.21 is not installed: its wheel carries the face models")
    return Path(next(iter(spec.submodule_search_locations))).resolve()


MEDIAPIPE_DIR = _mediapipe_dir()
MODULES_DIR = MEDIAPIPE_DIR / "modules"
FACE_DETECTION_SHORT_RANGE = MODULES_DIR / "face_detection" / "face_detection_short_range.tflite"
FACE_DETECTION_FULL_RANGE = MODULES_DIR / "face_detection" / "face_detection_full_range_sparse.tflite"
FACE_LANDMARK = MODULES_DIR / "face_landmark" / "face_landmark.tflite"


class BundledModel:
    """One TFLite model with a single float32 image input: `run` returns its outputs in the model's order.

    The interpreter is created on first use and freed by `close` (a later `run` creates it again), so a closed
    stream does not hold its models' memory even while something still references it.
    Not thread-safe: one instance per thread or stream.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._interpreter: Any = None
        interpreter = self._interpreter_for_run()  # a broken file fails here, not on the first frame
        # Tensor indices belong to the model, not the interpreter: looked up once, not per frame.
        self._input_index: int = interpreter.get_input_details()[0]["index"]
        self._output_indices: list[int] = [out["index"] for out in interpreter.get_output_details()]

    def run(self, image: np.ndarray, scale: float, offset: float = 0.0) -> list[np.ndarray]:
        """Outputs of one inference on `image * scale + offset` (copies, safe to keep).

        `image` is a uint8 array of the input's shape without the batch axis; it is converted straight into the
        interpreter's input buffer, with no float temporaries.
        """
        interpreter = self._interpreter_for_run()
        tensor = interpreter.tensor(self._input_index)()[0]
        np.multiply(image, scale, out=tensor, dtype=np.float32)
        if offset:
            tensor += np.float32(offset)
        del tensor  # the interpreter refuses to run while a view of its buffers is alive
        interpreter.invoke()
        return [interpreter.get_tensor(index) for index in self._output_indices]

    def close(self) -> None:
        """Free the interpreter."""
        self._interpreter = None

    def _interpreter_for_run(self) -> Any:
        if self._interpreter is None:
            try:
                interpreter = tflite_interpreter(model_content=_model_bytes(self.path), num_threads=1)
                interpreter.allocate_tensors()
            except (OSError, ValueError, RuntimeError) as exc:
                raise ModelPackageError(
                    f"{self.path}: cannot load the bundled MediaPipe model ({exc})"
                ) from exc
            self._interpreter = interpreter
        return self._interpreter


@cache
def _model_bytes(path: Path) -> bytes:
    """The file's bytes, read once per process: every stream's interpreter shares them, no file stays open."""
    return path.read_bytes()


@cache
def face_mesh_tessellation() -> frozenset[tuple[int, int]]:
    """FaceMesh's tessellation edges (landmark index pairs), read from the wheel's pure-data module by path."""
    path = MEDIAPIPE_DIR / "python" / "solutions" / "face_mesh_connections.py"
    spec = importlib.util.spec_from_file_location("mediapipe_face_mesh_connections", path)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"{path}: the mediapipe wheel's face mesh connections are missing")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return frozenset(module.FACEMESH_TESSELATION)
