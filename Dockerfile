# sync-gateway: one blocking HTTP call in front of an asynchronous job API.
# The image a deployment of replicas needs: the gateway with uvloop (default), the Redis extra
# and the tracing extra (OpenTelemetry, off unless SYNC_GATEWAY_TRACING_ENABLED=true), running
# as an unprivileged user, checked on the port it is configured for.
FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sync_gateway ./sync_gateway
# The project's own pyproject pins its dependencies' ranges; the build installs this checkout.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir --prefix=/install ".[redis,tracing]"

FROM python:3.12-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    SYNC_GATEWAY_SERVER_HOST=0.0.0.0 SYNC_GATEWAY_SERVER_PORT=8080
COPY --from=build /install /usr/local
RUN useradd --system --uid 10001 --no-create-home gateway
USER 10001
EXPOSE 8080
# The port the gateway is configured for (SYNC_GATEWAY_SERVER_PORT), not a fixed one.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('SYNC_GATEWAY_SERVER_PORT', '8080'); sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=2).status == 200 else 1)"]
# SIGTERM drains: in-flight waits get server.drain_seconds, then a 202 + Location.
STOPSIGNAL SIGTERM
ENTRYPOINT ["sync-gateway"]
CMD ["serve"]
