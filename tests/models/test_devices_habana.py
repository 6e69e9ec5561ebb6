"""Device detection against the real habana-tensorflow package on Python 3.10, with no Gaudi driver present.

`.ci/run` builds `.venv-hpu` (Python 3.10, tensorflow-cpu 2.15.0, habana-tensorflow 1.14.0.493). There the package
imports, `load_habana_module()` prints "Unable to read habanalabs driver file" and raises; `hpu_available` must turn
that into False, `select_device("auto")` into "cpu" and `select_device("hpu")` into a clear DeviceError.
"""

from __future__ import annotations

from hpu_venv import needs_hpu_venv, run_probe

PROBE = """
import json
import habana_frameworks.tensorflow  # the real package must import
from models.devices import hpu_available, select_device
from models.errors import DeviceError
result = {"hpu_available": hpu_available(), "auto": select_device("auto")}
try:
    select_device("hpu")
    result["hpu"] = "no error"
except DeviceError as exc:
    result["hpu"] = "DeviceError: " + str(exc)
print("RESULT " + json.dumps(result))
"""


@needs_hpu_venv
def test_real_habana_package_without_driver_means_no_hpu() -> None:
    result = run_probe(PROBE)
    assert result["hpu_available"] is False
    assert result["auto"] == "cpu"
    assert result["hpu"].startswith("DeviceError: device 'hpu' requested but no Habana Gaudi device")
