"""`fakeweb events export --out DIR|s3://bucket/prefix`: the reviewed events of a service's data folder as a
labelled data set (`stream.outputs.event_export`) for `fakeweb train --reviewed`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from stream.config import default_data_dir


def add_events_parser(commands: Any) -> None:
    """`fakeweb events`, added to the `commands` subparsers."""
    events = commands.add_parser("events", help="the service's recorded events: export the reviewed ones")
    actions = events.add_subparsers(dest="action", required=True, metavar="ACTION")
    export = actions.add_parser(
        "export", help="reviewed events' crops as real/ and fake/ folders with a manifest (local or S3)"
    )
    export.add_argument("--out", required=True, help="folder, file:///path or s3://bucket/prefix to write")
    export.add_argument(
        "--data-dir", type=Path, default=None, help="the service's data folder (default: as `fakeweb serve`)"
    )
    export.add_argument("--s3-endpoint-url", help="an S3-compatible server (default: AWS)")
    export.set_defaults(handler=export_events)


def export_events(args: argparse.Namespace) -> int:
    from models.store import open_backend
    from stream.outputs.event_export import export_reviewed
    from stream.outputs.event_store import EventStore

    data_dir = args.data_dir or default_data_dir()
    store = EventStore(data_dir / "events", read_only=True)  # the service may be running: read, never write
    summary = export_reviewed(store, open_backend(args.out, args.s3_endpoint_url))
    print(
        f"{args.out}: {summary.real} real and {summary.fake} fake crops from {summary.events} reviewed events"
    )
    return 0
