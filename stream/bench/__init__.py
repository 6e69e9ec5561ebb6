"""`fakeweb bench`: the performance suite (docs/performance.md). One module per benchmark, plus what they share.

`kernels` times each native stage alone, `live` runs concurrent paced streams through the live service, `seed`
compares the pipeline with the seed design, `overhead` sets the pipeline's per-frame cost against the sum of its
kernels. `calls` builds the kernels on real inputs, `clip` makes the default clip, `procstat` reads CPU and
memory from /proc, `histogram` keeps latencies in fixed memory, `report` prints and saves, `command` runs one
benchmark from the command line.
"""
