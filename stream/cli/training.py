"""`fakeweb train` and `fakeweb eval`: the training half of the command.

The one place where serving's package reaches into `training` (docs/architecture.md): a command's module is
imported only when that command runs, so serving never loads the training code or waits for it. Each parses its
own arguments (`fakeweb eval` has two forms: `DATA ...` and `merge SCORES...`) and raises FakewebError for an
expected failure, which `stream.cli` reports as it does for every command.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

TRAINING_COMMANDS = {"train": "train a model", "eval": "evaluate a model"}
"""The training commands and their one-line help."""


def add_training_parsers(commands: Any) -> None:
    """List the training commands in `fakeweb --help`; their own parsers read their arguments (`run_training`)."""
    for name, help in TRAINING_COMMANDS.items():
        commands.add_parser(name, help=f"{help} (fakeweb {name} --help)", add_help=False)


def run_training(name: str, argv: Sequence[str]) -> int:
    """Run training command `name` (one of `TRAINING_COMMANDS`) with its arguments `argv`."""
    if name == "train":
        from training.train import command
    else:
        from training.evaluate import command
    return command(argv)
