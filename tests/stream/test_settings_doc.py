"""The settings reference: docs/settings.md is what `stream.settings_doc` generates from `ServiceConfig`, lists
every setting once with its meaning, and `fakeweb serve --help` shows the same settings."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest
from project_paths import ROOT

from stream.cli import main
from stream.config import ServiceConfig
from stream.settings_doc import DOC_PATH, REFRESH_COMMAND, format_value, markdown, serve_flags, setting_docs

NAMES = [item.name for item in fields(ServiceConfig)]


def test_docs_settings_md_is_up_to_date() -> None:
    expected = markdown(serve_flags())
    actual = DOC_PATH.read_text(encoding="utf-8") if DOC_PATH.exists() else ""
    assert actual == expected, f"docs/settings.md is out of date: run `{REFRESH_COMMAND}`"


def test_every_setting_has_one_row_with_a_one_line_meaning() -> None:
    rows = [line for line in markdown(serve_flags()).splitlines() if line.startswith("| `")]
    assert [row.split(" | ")[0] for row in rows] == [f"| `{name}`" for name in NAMES]
    for doc in setting_docs({}):
        assert doc.help and "\n" not in doc.help and doc.help.endswith("."), doc
        assert doc.env == f"FAKEWEB_{doc.name.upper()}" and "MISSING" not in doc.default


def test_the_reference_holds_nothing_of_this_machine() -> None:
    """Defaults that depend on the machine (the data folder, the shipped model's path) are described instead."""
    text = markdown(serve_flags())
    assert str(ROOT) not in text and str(Path.home()) not in text
    assert "`$XDG_DATA_HOME/fakeweb`, else `~/.local/share/fakeweb`" in text


def test_flags_are_read_from_the_serve_parser() -> None:
    flags = serve_flags()
    assert flags["data_dir"] == "--data-dir" and flags["loopback_ice"] == "--loopback-ice"
    assert set(flags) <= set(NAMES) and "config" not in flags


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (True, "true"),
        (4.0, "4"),
        (0.25, "0.25"),
        (65536, "65536"),
        ((1.0, 1.0, 5.0, 60.0), "[1 (2 times), 5, 60]"),
    ],
)
def test_defaults_are_shown_as_toml_values(value: object, shown: str) -> None:
    assert format_value(value) == shown


def test_serve_help_points_at_the_reference_and_lists_every_setting(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "1")  # `main` sets a default; keep it from leaking
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--help"])
    help_text = capsys.readouterr().out
    assert exited.value.code == 0
    assert "docs/settings.md" in help_text
    for name in NAMES:
        assert f"\n  {name} (default " in help_text, name
