"""Reading a PyTorch state dict (`torch.save` file) into numpy arrays without torch.

Two layouts exist. The legacy one (torch < 1.6) is a stream of pickles: magic number, protocol version,
system info, the object, the list of storage keys; then each storage as an int64 element count and its raw
bytes. The zip one (torch >= 1.6) holds `<name>/data.pkl` and each storage's raw bytes in `<name>/data/<key>`.
In both, the object pickle names storages by persistent id and rebuilds tensors with `_rebuild_tensor_v2`.
The unpickler resolves only the few globals a state dict uses, so loading a file never runs its code.
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from training.backbones.weights import BackboneWeightsError

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


@dataclass(frozen=True)
class _StorageType:
    dtype: np.dtype


@dataclass(frozen=True)
class _StorageRef:
    key: str
    dtype: np.dtype
    offset: int  # elements into the root storage (legacy storage views)


@dataclass(frozen=True)
class _TensorRef:
    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(
    storage: _StorageRef, offset: int, size: tuple[int, ...], stride: tuple[int, ...], *_: Any
) -> _TensorRef:
    return _TensorRef(storage, storage.offset + offset, tuple(size), tuple(stride))


def _rebuild_parameter(data: _TensorRef, *_: Any) -> _TensorRef:
    return data


_GLOBALS: dict[tuple[str, str], Callable[..., Any]] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes]) -> None:
        super().__init__(file)
        self.storages: dict[str, np.dtype] = {}  # root storage key -> element type

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(np.dtype(_STORAGE_DTYPES[name]))
        try:
            return _GLOBALS[module, name]
        except KeyError:
            raise pickle.UnpicklingError(f"unsupported object {module}.{name}") from None

    def persistent_load(self, pid: Any) -> _StorageRef:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        storage_type, key = pid[1], str(pid[2])
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unsupported storage type {storage_type!r}")
        self.storages[key] = storage_type.dtype
        # legacy files may name a view of the root storage: (view key, offset, size)
        view = pid[5] if len(pid) > 5 else None
        return _StorageRef(key, storage_type.dtype, int(view[1]) if view else 0)


# What unpickling a damaged file can raise, besides our own BackboneWeightsError.
_CORRUPT = (
    OSError,
    EOFError,
    pickle.UnpicklingError,
    zipfile.BadZipFile,
    struct.error,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    OverflowError,
)


def load_state_dict(path: Path) -> dict[str, np.ndarray]:
    """The tensors of the state dict saved at `path`, by name; BackboneWeightsError when it cannot be read."""
    try:
        data = Path(path).read_bytes()
        if zipfile.is_zipfile(io.BytesIO(data)):
            return _load_zip(data)
        return _load_legacy(data)
    except BackboneWeightsError as error:
        raise BackboneWeightsError(f"{path}: {error}") from None
    except _CORRUPT as error:
        raise BackboneWeightsError(f"{path} is not a readable PyTorch state dict: {error}") from None


def _load_legacy(data: bytes) -> dict[str, np.ndarray]:
    stream = io.BytesIO(data)
    if pickle.load(stream) != _LEGACY_MAGIC:
        raise BackboneWeightsError("not a PyTorch file (wrong magic number)")
    if (protocol := pickle.load(stream)) != _LEGACY_PROTOCOL:
        raise BackboneWeightsError(f"unsupported PyTorch file protocol {protocol}")
    if not pickle.load(stream).get("little_endian", False):
        raise BackboneWeightsError("big-endian PyTorch files are not supported")
    unpickler = _Unpickler(stream)
    state = unpickler.load()
    storages: dict[str, np.ndarray] = {}
    for key in pickle.load(stream):
        dtype = unpickler.storages[str(key)]
        (count,) = struct.unpack("<q", _read(stream, 8))
        storages[str(key)] = np.frombuffer(_read(stream, count * dtype.itemsize), dtype=dtype)
    return _resolve(state, storages)


def _load_zip(data: bytes) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        pickles = [name for name in archive.namelist() if name.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise BackboneWeightsError("zip file without exactly one data.pkl")
        prefix = pickles[0][: -len("data.pkl")]
        if prefix + "byteorder" in archive.namelist() and archive.read(prefix + "byteorder") != b"little":
            raise BackboneWeightsError("big-endian PyTorch files are not supported")
        unpickler = _Unpickler(io.BytesIO(archive.read(pickles[0])))
        state = unpickler.load()
        storages = {
            key: np.frombuffer(archive.read(f"{prefix}data/{key}"), dtype=dtype)
            for key, dtype in unpickler.storages.items()
        }
    return _resolve(state, storages)


def _read(stream: IO[bytes], size: int) -> bytes:
    chunk = stream.read(size)
    if len(chunk) != size:
        raise BackboneWeightsError("file is truncated")
    return chunk


def _resolve(state: Any, storages: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if not isinstance(state, dict) or not all(
        isinstance(key, str) and isinstance(value, _TensorRef) for key, value in state.items()
    ):
        raise BackboneWeightsError("the file holds something other than a state dict of tensors")
    return {name: _tensor(ref, storages[ref.storage.key]) for name, ref in state.items()}


def _tensor(ref: _TensorRef, storage: np.ndarray) -> np.ndarray:
    if 0 in ref.size:
        return np.zeros(ref.size, dtype=storage.dtype)
    last = ref.offset + sum((size - 1) * stride for size, stride in zip(ref.size, ref.stride, strict=True))
    if ref.offset < 0 or min(ref.stride, default=0) < 0 or last >= len(storage):
        raise BackboneWeightsError(f"tensor of size {ref.size} reaches past its storage of {len(storage)}")
    strides = tuple(stride * storage.itemsize for stride in ref.stride)
    view = np.lib.stride_tricks.as_strided(storage[ref.offset :], shape=ref.size, strides=strides)
    return np.array(view)
