"""Exceptions for expected failures: each carries a message fit to show a user without a traceback."""


class FakewebError(Exception):
    """Base class for errors that are reported to the user as a one-line message."""


class ModelPackageError(FakewebError):
    """A model folder is missing, incomplete, corrupt or inconsistent with its manifest."""


class DeviceError(FakewebError):
    """A requested accelerator is not present or cannot be used."""


class InputError(FakewebError):
    """An input (file, URL, frame) cannot be read."""


class ModelStoreError(FakewebError):
    """A model store is unreachable or refuses an operation, or holds a missing or corrupt version."""


class CorruptVersionError(ModelStoreError):
    """A version's files in the store do not match their manifest's checksums: the version itself is bad."""
