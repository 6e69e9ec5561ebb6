"""Sources: where frames come from and the one conversion of a decoded picture into the pipeline's `Frame`.

`frames` (the `Frame`, `DecodedFrame` and `rgb_within`, the `FrameSource` interface), `file_source` (video files,
and the PyAV open/decode steps network sources reuse), `rtsp` (an RTSP camera read on its own threads). A
browser's WebRTC track is drained by the live route (`stream.live.route`) into the same `DecodedFrame`.
"""
