# FakeWeb Live, CPU image: every model on LiteRT (TFLite) on the CPU, `fakeweb serve` on port 8080. No TensorFlow,
# jax or GUI OpenCV inside (docker/serving.txt says what is and why). GPU and Habana Gaudi variants:
# docker/Dockerfile.gpu, docker/Dockerfile.hpu. Build and run with docker-compose.yml (docs/operations.md); a
# non-loopback bind needs FAKEWEB_TOKEN.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Dependencies first, in their own layer: a code change does not reinstall them.
WORKDIR /src
COPY constraints.txt docker/serving.txt ./
RUN pip install -c constraints.txt -r serving.txt

# The project and MediaPipe's wheel (for its model files) without their other dependencies; the import check
# fails the build if the serving path needs anything serving.txt left out.
COPY . .
RUN pip install --no-deps -c constraints.txt "mediapipe==0.10.21" . \
    && python -c "import stream.live.service, stream.cli.run_file, models.detector, models.landmarks" \
    && rm -rf /src

# /data holds cameras.json (the camera list) and model-cache/ (models fetched from a store): both are volumes.
RUN useradd --system --uid 10001 --home-dir /data fakeweb \
    && mkdir -p /data/model-cache \
    && chown -R fakeweb /data
USER fakeweb
WORKDIR /data
ENV FAKEWEB_DATA_DIR=/data

EXPOSE 8080
CMD ["fakeweb", "serve", "--host", "0.0.0.0", "--port", "8080"]
