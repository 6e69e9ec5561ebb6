"""The model contract shared by serving (`stream`) and training (`training`).

Face detection and landmarks, the single crop/preprocessing definition, the model package format, classifier
backends, device selection and the model store live here. Nothing in this package imports aiohttp or aiortc.
"""

import logging

logging.getLogger(__name__).addHandler(logging.NullHandler())
