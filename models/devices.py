"""Which accelerator to run on: Habana HPU, else GPU, else CPU; a requested device that is absent is an error."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import logging
import subprocess
import sys
from collections.abc import Callable
from typing import Literal

from models.errors import DeviceError

logger = logging.getLogger(__name__)

Device = Literal["hpu", "gpu", "cpu"]
DEVICE_CHOICES = ("auto", "hpu", "gpu", "cpu")


_HPU_PROBE = """
import habana_frameworks.tensorflow as htf
htf.load_habana_module()
import tensorflow as tf
print("HPU_COUNT", len(tf.config.list_logical_devices("HPU")))
"""


def _probe_hpu_in_subprocess(timeout: float = 180.0) -> bool:
    """Load the Habana module in a throwaway interpreter and report whether it saw an HPU."""
    try:
        completed = subprocess.run(
            [sys.executable, "-c", _HPU_PROBE], capture_output=True, text=True, timeout=timeout
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        logger.info("HPU probe could not run (%s); no HPU", exc)
        return False
    for line in completed.stdout.splitlines():
        if line.startswith("HPU_COUNT "):
            return int(line.split()[1]) > 0
    logger.info(
        "HPU probe failed (exit %s); no HPU: %s", completed.returncode, completed.stderr.strip()[-300:]
    )
    return False


@functools.cache
def hpu_available() -> bool:
    """True when `habana_frameworks.tensorflow` is installed, loads, and TensorFlow then lists an HPU.

    Without a Gaudi driver the package imports but `load_habana_module()` prints "Unable to read habanalabs
    driver file" and raises AttributeError, and TensorFlow then aborts the whole process (C++ terminate) at its
    first device listing (seen with 1.14.0). So the module is first loaded in a child interpreter; only when
    that child sees an HPU is it loaded here. The answer is computed once per process.
    """
    if importlib.util.find_spec("habana_frameworks") is None:
        return False
    if not _probe_hpu_in_subprocess():
        return False
    import habana_frameworks.tensorflow as htf  # type: ignore[import-not-found]
    import tensorflow as tf

    with contextlib.redirect_stdout(io.StringIO()):
        htf.load_habana_module()
    return bool(tf.config.list_logical_devices("HPU"))


def tensorflow_installed() -> bool:
    """True when TensorFlow is importable: GPU/HPU serving and the SavedModel backend need it, CPU TFLite does not."""
    return importlib.util.find_spec("tensorflow") is not None


def require_tensorflow(purpose: str) -> None:
    """Raise DeviceError naming the extra to install when TensorFlow is absent (the slim CPU image has none)."""
    if not tensorflow_installed():
        raise DeviceError(
            f"{purpose} needs TensorFlow, which is not installed: pip install 'fakeweb-live[tf]' "
            "(or use the TFLite backend on the CPU)"
        )


def gpu_available() -> bool:
    """True when TensorFlow is installed and lists a GPU."""
    if not tensorflow_installed():
        return False
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
