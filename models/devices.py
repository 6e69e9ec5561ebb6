"""Which accelerator to run on: Habana HPU, else GPU, else CPU; a requested device that is absent is an error."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Callable
from typing import Literal

from models.errors import DeviceError

logger = logging.getLogger(__name__)

Device = Literal["hpu", "gpu", "cpu"]
DEVICE_CHOICES = ("auto", "hpu", "gpu", "cpu")


def hpu_available() -> bool:
    """True when `habana_frameworks.tensorflow` imports, loads its module and TensorFlow then lists an HPU.

    Without a Gaudi driver the package imports but `load_habana_module()` prints "Unable to read habanalabs
    driver file" and raises (AttributeError in 1.14.0); any such failure means "no HPU".
    """
    try:
        import habana_frameworks.tensorflow as htf  # type: ignore[import-not-found]
    except ImportError:
        return False
    try:
        with contextlib.redirect_stdout(io.StringIO()) as captured:
            htf.load_habana_module()
    except Exception as exc:  # noqa: BLE001 - the module fails in many ways without a device
        logger.info("Habana module present but unusable (%s: %s); no HPU", type(exc).__name__, exc)
        return False
    if captured.getvalue().strip():
        logger.debug("load_habana_module: %s", captured.getvalue().strip())
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("HPU"))


def gpu_available() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def select_device(
    requested: str = "auto",
    probe_hpu: Callable[[], bool] = hpu_available,
    probe_gpu: Callable[[], bool] = gpu_available,
) -> Device:
    """Resolve `requested` (auto|hpu|gpu|cpu) to a device that is present, or raise DeviceError."""
    if requested not in DEVICE_CHOICES:
        raise DeviceError(f"unknown device {requested!r}; choose one of {', '.join(DEVICE_CHOICES)}")
    if requested == "cpu":
        return "cpu"
    if requested == "hpu":
        if not probe_hpu():
            raise DeviceError(
                "device 'hpu' requested but no Habana Gaudi device is usable "
                "(install habana-tensorflow on Python 3.10 and run on a DL1 instance with the driver)"
            )
        return "hpu"
    if requested == "gpu":
        if not probe_gpu():
            raise DeviceError("device 'gpu' requested but TensorFlow sees no GPU")
        return "gpu"
    if probe_hpu():
        return "hpu"
    if probe_gpu():
        return "gpu"
    return "cpu"


def tf_device_name(device: Device) -> str:
    """The TensorFlow device string for a resolved device."""
    return {"hpu": "/device:HPU:0", "gpu": "/device:GPU:0", "cpu": "/device:CPU:0"}[device]
