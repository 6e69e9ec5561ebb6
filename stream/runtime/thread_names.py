"""The names of the threads serving starts for each stream, `<kind>-<stream id>`: one definition for the
modules that start them (`stream.live.worker`, `stream.outputs.encoder`, `stream.outputs.rtsp_out`,
`stream.sources.rtsp`, `stream.bench.live`) and for those that count them by kind (`stream.bench.procstat`;
`top -H` shows them too)."""

from __future__ import annotations

WORKER = "worker"
"""`stream.live.worker`: the stream's pipeline."""
ENCODER = "encoder"
"""`stream.outputs.encoder`: the stream's annotated frames to VP8."""
RTSP_READER = "rtsp-read"
"""`stream.sources.rtsp`: a camera's reading and decoding."""
RTSP_WATCHER = "rtsp-watch"
"""`stream.sources.rtsp`: a camera's stall watchdog."""
RTSP_PUBLISHER = "rtsp-out"
"""`stream.outputs.rtsp_out`: the stream's annotated frames to H.264, published to a media server."""
FEEDER = "feeder"
"""`stream.bench.live`: a benchmark stream's paced source."""
PER_STREAM = (WORKER, ENCODER, RTSP_READER, RTSP_WATCHER, RTSP_PUBLISHER, FEEDER)


def stream_thread_name(kind: str, stream_id: str) -> str:
    """The name of stream `stream_id`'s thread of `kind` (one of `PER_STREAM`)."""
    return f"{kind}-{stream_id}"


def thread_kind(name: str) -> str | None:
    """The kind of a per-stream thread from its name (`worker-cam-1` -> `worker`); None for any other thread."""
    return next((kind for kind in PER_STREAM if name.startswith(f"{kind}-")), None)
