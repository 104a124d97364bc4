# sessionizer: one replica of the service. State lives in a volume; the
# changelog topics can rebuild it, so losing the volume costs a restore only.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# pyproject names README.md as the package's readme, so pip needs it to build.
COPY pyproject.toml README.md ./
COPY service ./service
# With the registry extra: Avro, Protobuf and JSON Schema sources and outputs (docs/formats.md).
RUN pip install ".[registry]" && rm -rf build *.egg-info
COPY config ./config
# config/rules.toml names a custom aggregate class, examples.aggregates:TopValues:
# it is imported from /app (PYTHONPATH), where your own classes can go too.
COPY examples ./examples
ENV PYTHONPATH=/app
COPY scripts/demo_events.py scripts/create_topics.py ./scripts/

RUN useradd --system --uid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin sessionizer \
    && mkdir -p /var/lib/sessionizer \
    && chown sessionizer /var/lib/sessionizer
ENV SESSIONIZER__APP__STATE_DIR=/var/lib/sessionizer
VOLUME ["/var/lib/sessionizer"]
USER sessionizer

EXPOSE 9108
# Liveness: the stream loop is going round (see docs/operations.md, Health).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('SESSIONIZER__HTTP__PORT', '9108') + '/healthz', timeout=4)"]

# OCI labels. VERSION is the package's (pyproject.toml); a build can pass the
# repository's URL: docker build --build-arg SOURCE_URL="$(git remote get-url origin)" .
# The project declares no licence yet: NOASSERTION is SPDX for "not stated".
ARG VERSION=0.1.0
ARG SOURCE_URL=""
LABEL org.opencontainers.image.title="sessionizer" \
      org.opencontainers.image.description="Final session and rolling-window aggregates over Kafka topics, one record per closed window, exactly once." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.licenses="NOASSERTION"

# SIGTERM finishes the batch, commits, closes the stores and leaves the group.
STOPSIGNAL SIGTERM
ENTRYPOINT ["sessionizer"]
CMD ["run", "--config", "/app/config/sessionizer.toml"]
