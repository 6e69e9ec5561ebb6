"""The settings reference, generated from `ServiceConfig`: docs/settings.md and the settings in
`fakeweb serve --help`. Each field's `help` is the one place a setting's meaning is written (the flags' help is
made from it too, `stream.cli.settings_flags`).

`python -m stream.settings_doc --write` refreshes docs/settings.md; without `--write` it prints the page.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import Field, dataclass, fields
from pathlib import Path
from typing import Any

from stream.config import ServiceConfig, env_name

DOC_PATH = Path(__file__).resolve().parents[1] / "docs" / "settings.md"
REFRESH_COMMAND = "python -m stream.settings_doc --write"

TYPE_NAMES = {
    "str": "string",
    "str | None": "string",
    "int": "integer",
    "float": "number",
    "bool": "boolean",
    "Path": "path",
    "tuple[float, ...]": "list of numbers",
    "tuple[str, ...]": "list of strings",
}
"""How docs/settings.md names each kind of ServiceConfig field (by its annotation)."""

HEADER = f"""# Settings

<!-- Generated from `ServiceConfig` (stream/config.py) by `{REFRESH_COMMAND}`:
edit a setting's `help` there, then run that command; tests/stream/test_settings_doc.py fails while this file is out
of date. -->

`fakeweb serve` takes each setting from, last one winning: its default, a TOML file (`--config FILE`, keyed by the
setting's name), its environment variable and its flag, where it has one. In the environment a list is numbers
separated by commas or spaces (`FAKEWEB_RTSP_BACKOFF_SECONDS="1, 5, 60"`) and a boolean is true when it is `1`,
`true`, `yes` or `on`. A TOML file, for example:

```toml
host = "0.0.0.0"
max_streams = 4
rtsp_backoff_seconds = [1, 5, 60]
```

with the token in the environment (`FAKEWEB_TOKEN`), where `ps` does not show it. The verdict settings are
explained in [operations.md](operations.md#verdicts-what-a-faces-label-means-and-the-scoring-settings), the
reliability ones (reconnection, watchdog, timeouts, overload) in [reliability.md](reliability.md).

| setting (TOML key) | environment variable | flag | type | default | meaning |
| --- | --- | --- | --- | --- | --- |
"""


@dataclass(frozen=True)
class SettingDoc:
    """One setting as the reference shows it."""

    name: str
    env: str
    flag: str | None
    type: str
    default: str
    help: str


def format_value(value: Any) -> str:
    """A default as TOML would write it, but a run of equal list items as `value (count times)`."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return "[" + ", ".join(_runs(value)) + "]"
    return str(value)


def _runs(items: tuple[Any, ...]) -> list[str]:
    runs = [(item, len(list(group))) for item, group in itertools.groupby(items)]
    return [format_value(item) + (f" ({count} times)" if count > 1 else "") for item, count in runs]


def shown_default(item: Field[Any]) -> str:
    """The default of the ServiceConfig field `item` as the reference shows it (Markdown)."""
    return str(item.metadata["shown"] or f"`{format_value(item.default)}`")


def setting_docs(flags: Mapping[str, str]) -> list[SettingDoc]:
    """Every ServiceConfig field, in declaration order; `flags` maps a setting to its `fakeweb serve` flag."""
    docs = []
    for item in fields(ServiceConfig):
        choices = item.metadata["choices"]
        kind = ", ".join(f"`{choice}`" for choice in choices) if choices else TYPE_NAMES[str(item.type)]
        docs.append(
            SettingDoc(
                item.name,
                env_name(item.name),
                flags.get(item.name),
                kind,
                shown_default(item),
                item.metadata["help"],
            )
        )
    return docs


def serve_flags() -> dict[str, str]:
    """The `fakeweb serve` flag of each setting that has one."""
    from stream.cli import add_serve_arguments  # here: the CLI imports this module for its --help

    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    names = {item.name for item in fields(ServiceConfig)}
    flags = {}
    for action in parser._actions:
        if action.dest in names:  # the long form; a yes/no setting's `--name`, not its `--no-name`
            flags[action.dest] = next(o for o in reversed(action.option_strings) if not o.startswith("--no-"))
    return flags


def _row(doc: SettingDoc) -> str:
    cells = (
        f"`{doc.name}`",
        f"`{doc.env}`",
        f"`{doc.flag}`" if doc.flag else "",
        doc.type,
        doc.default,
        doc.help,
    )
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |\n"


def markdown(flags: Mapping[str, str]) -> str:
    """docs/settings.md: the header, then one table row per setting."""
    return HEADER + "".join(_row(doc) for doc in setting_docs(flags))


def serve_epilog(width: int = 78) -> str:
    """The settings for `fakeweb serve --help`, as plain text `width` columns wide: name, default, meaning."""
    intro = (
        "settings (also in docs/settings.md), each from a TOML file (--config; keyed by name), a FAKEWEB_<NAME> "
        "environment variable or a flag, where it has one; a flag wins over the environment, which wins over "
        "the file:"
    )
    lines = [textwrap.fill(intro, width)]
    for doc in setting_docs({}):
        entry = f"{doc.name} (default {doc.default}): {doc.help}".replace("`", "")
        lines.append(textwrap.fill(entry, width, initial_indent="  ", subsequent_indent="      "))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stream.settings_doc", description=__doc__)
    parser.add_argument("--write", action="store_true", help=f"write {DOC_PATH} instead of printing it")
    args = parser.parse_args(argv)
    text = markdown(serve_flags())
    if args.write:
        DOC_PATH.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
