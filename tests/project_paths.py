"""Where the project's files are, for tests that read them or run its commands: defined once, so a test's folder
inside tests/ does not change what it finds."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
"""The repository's root."""
SHARED_DATA = ROOT.parent / "shared" / "data"
"""The sibling `shared/data` folder (optional: tests that need it skip without it)."""
