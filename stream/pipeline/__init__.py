"""The per-stream pipeline: one frame at a time through detect -> track -> classify -> smooth -> mesh -> draw.

`pipeline` (`StreamPipeline`, `PipelineConfig`, `FrameResult`), `tracker` (IoU + Hungarian tracks), `scoring`
(per-track smoothing and verdicts), `overlay` (the mesh, boxes and labels drawn on the frame). No threads here:
the live route's worker or the file run calls `process`; classification goes through the `ClassifyFn` it is
given (the live service's shared batcher, or the classifier directly).
"""
