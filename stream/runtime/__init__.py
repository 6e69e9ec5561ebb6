"""How serving's threads run: their role and CPU pinning, the split that follows the load, /proc, thread names,
the latest-wins slot between threads, and per-frame stage timing. Every other room builds on these; they import
nothing else from `stream`.

`affinity` (`RolePinning`: threads by role, pinned while a split is set), `cpu_split` (the `auto` split),
`procfs` (the one reader of /proc), `thread_names` (`<kind>-<stream id>`), `latest` (`LatestSlot`), `timing`
(`StageTimes`).
"""
