"""Outputs: the one fan-out of each processed frame to its sinks, and the sinks.

`fanout` (`Fanout`, `ResultSink`, the per-frame metrics sink), `feed` (the annotated video for WebRTC viewers,
encoded once by `encoder`, sent to each viewer by `viewer`), `verdicts` (face verdicts on the viewers' data
channels), `sinks` (a file run's H.264 video and JSON-lines results), `metrics` (the Prometheus registry every
part reports to).
"""
