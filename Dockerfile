# FakeWeb Live, CPU image: the TFLite classifier on the CPU, `fakeweb serve` on port 8080.
# Build and run with docker-compose.yml (docs/operations.md); a non-loopback bind needs FAKEWEB_TOKEN.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# OpenCV, which MediaPipe pulls in, needs libGL and GLib at import time; PyAV bundles its own FFmpeg.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

# .dockerignore keeps the context to pyproject.toml, constraints.txt, the README and the packages.
WORKDIR /src
COPY . .
RUN pip install -c constraints.txt .

# /data holds cameras.json (the camera list) and model-cache/ (models fetched from a store): both are volumes.
RUN useradd --system --uid 10001 --home-dir /data fakeweb \
    && mkdir -p /data/model-cache \
    && chown -R fakeweb /data
USER fakeweb
WORKDIR /data
ENV FAKEWEB_DATA_DIR=/data

EXPOSE 8080
CMD ["fakeweb", "serve", "--host", "0.0.0.0", "--port", "8080"]
