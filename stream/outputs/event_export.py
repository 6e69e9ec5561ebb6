"""Reviewed events as a labelled data set for `fakeweb train --reviewed`: the crops of events operators marked
`real` go to `real/`, those marked `correct` (manipulated) to `fake/`, with `manifest.json` naming each file's
event, stream, model version and review. Written to a folder or an S3 prefix (`models.store.open_backend`).

The crops are the classifier's own input (the model's crop of the face, before any drawing), so they are what
training crops too; a file is `<event id>-crop-<n>.jpg`, and the event id groups a face's crops on one side of a
split.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from models.store import StoreBackend
from stream.outputs.event_store import EventStore

LABELS = {"real": "real", "correct": "fake"}
"""Review outcome -> data-set folder."""
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class ExportSummary:
    real: int
    fake: int
    events: int


def export_reviewed(store: EventStore, backend: StoreBackend) -> ExportSummary:
    """Write every reviewed event's crops and the manifest; returns what was written."""
    samples: list[dict[str, Any]] = []
    exported = 0
    for event in store.list(reviewed=True):
        label = LABELS[event.review["outcome"]] if event.review else None
        if label is None:
            continue
        written = 0
        for name in event.crops:
            path = store.file(event.event_id, name)
            if path is None:
                continue  # its write failed (a full disk): the other crops still count
            key = f"{label}/{event.event_id}-{name}"
            backend.write(key, path.read_bytes())
            samples.append(
                {
                    "file": key,
                    "label": label,
                    "event": event.event_id,
                    "stream": event.stream,
                    "model_version": event.model_version,
                    "review": event.review,
                }
            )
            written += 1
        exported += written > 0
    counts = {label: sum(1 for sample in samples if sample["label"] == label) for label in ("real", "fake")}
    manifest = {"created_at": time.time(), "counts": counts, "events": exported, "samples": samples}
    backend.write(MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())
    return ExportSummary(counts["real"], counts["fake"], exported)
