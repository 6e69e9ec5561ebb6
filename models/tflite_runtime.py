"""The TFLite interpreter every CPU model runs on: LiteRT (`ai-edge-litert`), TensorFlow's interpreter unbundled.

The CPU serving path (face detection, landmarks, the classifier's TFLite file) needs only this runtime, not
TensorFlow: the slim CPU image installs LiteRT alone. It is the same interpreter (same kernels, XNNPACK), so the
outputs match `tf.lite.Interpreter`'s (tests/models/test_tflite_runtime.py).
"""

from __future__ import annotations

from typing import Any

from ai_edge_litert.interpreter import Interpreter


def tflite_interpreter(
    *, model_content: bytes | None = None, model_path: str | None = None, num_threads: int = 1
) -> Any:
    """A LiteRT interpreter for a model given as bytes or as a file path (tensors not yet allocated)."""
    return Interpreter(model_content=model_content, model_path=model_path, num_threads=num_threads)
