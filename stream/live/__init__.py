"""The live service (`fakeweb serve`): each stream's route, the services streams share, and the HTTP app.

`route` (one stream: source -> worker -> pipeline -> outputs), `worker` (a stream's pipeline thread and the
`FairGate` all workers share), `batcher` (classify crops of all streams in batches), `reload` (the model in use
and its hot reload), `service` (streams, peers, viewers, limits, the camera list), `cameras` (the persisted
camera list), `app` and `openapi` (aiohttp routes and the API's description), `serve` (start-up and shutdown),
`web/` (the page).
"""
