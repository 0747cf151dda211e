# sync-gateway: one blocking HTTP call in front of an asynchronous job API.
FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sync_gateway ./sync_gateway
RUN pip install --no-cache-dir --prefix=/install ".[speed]"

FROM python:3.12-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    SYNC_GATEWAY_SERVER_HOST=0.0.0.0 SYNC_GATEWAY_SERVER_PORT=8080
COPY --from=build /install /usr/local
RUN useradd --system --uid 10001 --no-create-home gateway
USER gateway
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status == 200 else 1)"]
# SIGTERM drains: in-flight waits get server.drain_seconds, then a 202 + Location.
STOPSIGNAL SIGTERM
ENTRYPOINT ["sync-gateway"]
CMD ["serve"]
