"""Write a trained Keras model as a model package: saved_model/, model.tflite and a checksummed manifest."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from models.errors import ModelPackageError
from models.manifest import MANIFEST_NAME, SAVED_MODEL_DIR, TFLITE_NAME, Manifest, hash_tree, sha256_file
from models.package import ModelPackage
from models.preprocess import CropSpec

AGREEMENT_TOLERANCE = 1e-3
INPUT_NAME = "crops"
OUTPUT_NAME = "probability"
_REPO_ROOT = Path(__file__).resolve().parents[1]


def git_state(repo: Path = _REPO_ROOT) -> dict[str, Any]:
    """The commit checked out in `repo` and whether the tree has changes; None when git is unavailable."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True, check=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "git_dirty": None}
    return {"git_commit": commit, "git_dirty": bool(status.strip())}


def save_serving_model(model: tf.keras.Model, folder: Path, size: int) -> None:
    """SavedModel whose `serving_default` maps float32 `crops` (N, S, S, 3) to `probability` (N,)."""
    module = tf.Module()
    module.weights = model.weights  # tracked so the signature's captured variables are saved

    @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32, name=INPUT_NAME)])
    def serve(crops: tf.Tensor) -> dict[str, tf.Tensor]:
        return {OUTPUT_NAME: tf.reshape(model(crops, training=False), [-1])}

    module.serve = serve
    tf.saved_model.save(module, str(folder), signatures={"serving_default": serve})


def convert_to_tflite(saved_model: Path) -> bytes:
    """Float32 TFLite flatbuffer of the SavedModel's serving signature (builtin ops only, no quantisation)."""
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model), signature_keys=["serving_default"])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return bytes(converter.convert())


def run_saved_model(saved_model: Path, batch: np.ndarray) -> np.ndarray:
    signature = tf.saved_model.load(str(saved_model)).signatures["serving_default"]
    return np.asarray(signature(**{INPUT_NAME: tf.constant(batch)})[OUTPUT_NAME], dtype=np.float32).reshape(
        -1
    )


def run_tflite(model_content: bytes, batch: np.ndarray, num_threads: int = 1) -> np.ndarray:
    interpreter = tf.lite.Interpreter(model_content=model_content, num_threads=num_threads)
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, list(batch.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, batch)
    interpreter.invoke()
    output = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    return np.asarray(output, dtype=np.float32).reshape(-1)


def export_package(
    model: tf.keras.Model,
    out_dir: Path,
    spec: CropSpec,
    threshold: float,
    architecture: str,
    metrics: dict[str, Any],
    provenance: dict[str, Any],
    check_batch: np.ndarray,
    overwrite: bool = False,
    calibration: dict[str, Any] | None = None,
) -> ModelPackage:
    """Write the package to `out_dir` atomically and return it loaded and verified.

    Raises ModelPackageError when TFLite and SavedModel disagree on `check_batch` by more than 1e-3, and
    FileExistsError when `out_dir` exists unless `overwrite` (the old folder is then replaced as a whole).
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} exists; choose another folder or overwrite it")
    if check_batch.ndim != 4 or check_batch.shape[1:] != (spec.size, spec.size, 3) or not len(check_batch):
        raise ValueError(f"check_batch must be (N>0, {spec.size}, {spec.size}, 3), got {check_batch.shape}")
    batch = check_batch.astype(np.float32)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.staging-", dir=out_dir.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the package is an ordinary readable folder
    try:
        save_serving_model(model, staging / SAVED_MODEL_DIR, spec.size)
        tflite_bytes = convert_to_tflite(staging / SAVED_MODEL_DIR)
        (staging / TFLITE_NAME).write_bytes(tflite_bytes)
        reference = run_saved_model(staging / SAVED_MODEL_DIR, batch)
        diff = float(np.max(np.abs(run_tflite(tflite_bytes, batch) - reference)))
        if not diff <= AGREEMENT_TOLERANCE:
            raise ModelPackageError(f"TFLite and SavedModel disagree by {diff:.2e} (> {AGREEMENT_TOLERANCE})")
        now = datetime.now(timezone.utc)
        manifest = Manifest(
            version=f"{now:%Y%m%d-%H%M%S}-{sha256_file(staging / TFLITE_NAME)[:8]}",
            created_at=now.isoformat(timespec="seconds"),
            architecture=architecture,
            crop=spec,
            threshold=float(threshold),
            files=hash_tree(staging),
            calibration=calibration,
            metrics={**metrics, "tflite_savedmodel_max_abs_diff": diff},
            provenance={
                "command": shlex.join(sys.argv),
                **git_state(),
                "tensorflow": tf.__version__,
                **provenance,
            },
        )
        (staging / MANIFEST_NAME).write_text(manifest.to_json(), encoding="utf-8")
        _move_into_place(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ModelPackage.load(out_dir)


def _move_into_place(staging: Path, out_dir: Path) -> None:
    if not out_dir.exists():
        staging.rename(out_dir)
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
    retired.rmdir()
    out_dir.rename(retired)
    staging.rename(out_dir)
    shutil.rmtree(retired, ignore_errors=True)
