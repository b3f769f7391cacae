# The payment-webhook bridge as a container.
#
#   docker build -t payment-webhook-bridge .
#   docker run -d -p 8000:8000 --stop-timeout 30 \
#     -v "$PWD/bridge.yaml:/etc/bridge/bridge.yaml:ro" -v bridge-data:/var/lib/bridge \
#     -e STRIPE_WEBHOOK_SECRET=whsec_... payment-webhook-bridge
#
# BASE_IMAGE is any Debian-like image with Python 3.11+ and its venv module: the official
# python image by default (python3 in /usr/local/bin), or a plain Debian with python3 and
# python3-venv (python3 in /usr/bin), as tests/test_container.py builds it. Both stages use
# the same base, so the venv made in the first runs unchanged in the second.
ARG BASE_IMAGE=docker.io/library/python:3.12-slim

# --- build: the wheel, then a venv with it and its dependencies ----------------------------
FROM ${BASE_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY bridge ./bridge

# With the [postgres] extra: the PostgreSQL backend for BRIDGE_DATABASE_URL=postgresql://...
# Every dependency, direct or not, at the version constraints.txt pins.
# pip and setuptools leave the runtime venv once it is built (nothing installs at run time).
RUN python3 -m venv /opt/build \
    && /opt/build/bin/pip wheel --no-deps --wheel-dir /wheels . \
    && python3 -m venv /opt/bridge \
    && wheel="$(echo /wheels/payment_webhook_bridge-*.whl)" \
    && /opt/bridge/bin/pip install --constraint constraints.txt "${wheel}[postgres]" \
    && /opt/bridge/bin/bridge --help > /dev/null \
    && /opt/bridge/bin/pip uninstall --yes pip setuptools

# --- runtime: the venv, a non-root user, nothing else ---------------------------------------
FROM ${BASE_IMAGE}

LABEL org.opencontainers.image.title="payment-webhook-bridge" \
      org.opencontainers.image.description="Verify payment webhooks, map them, deliver them to Dub, Umami, an ecommerce analytics API and Voucherify." \
      org.opencontainers.image.licenses="MIT"

RUN groupadd --gid 10001 bridge \
    && useradd --uid 10001 --gid bridge --home-dir /var/lib/bridge --no-create-home \
        --shell /usr/sbin/nologin bridge \
    && mkdir -p /etc/bridge /var/lib/bridge \
    && chown bridge:bridge /var/lib/bridge

COPY --from=build /opt/bridge /opt/bridge

# The mapping table is mounted at /etc/bridge/bridge.yaml (read-only is fine); secrets come in
# as environment variables (the table's ${VAR}). SQLite lives on the volume; set
# BRIDGE_DATABASE_URL=postgresql://... for PostgreSQL, or to "" to use the table's storage.url.
ENV PATH=/opt/bridge/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    BRIDGE_CONFIG=/etc/bridge/bridge.yaml \
    BRIDGE_DATABASE_URL=sqlite:////var/lib/bridge/bridge.db \
    BRIDGE_HOST=0.0.0.0 \
    BRIDGE_PORT=8000

VOLUME ["/var/lib/bridge"]
WORKDIR /var/lib/bridge
USER 10001:10001
EXPOSE 8000

# Liveness without curl: the venv's Python asks /healthz on the port the bridge listens on,
# directly (an HTTP_PROXY in the container's environment is not for this loopback request).
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:%s/healthz' % os.environ.get('BRIDGE_PORT', '8000'), timeout=4)"]

# `bridge serve` is PID 1 (it reads BRIDGE_HOST and BRIDGE_PORT): SIGTERM starts uvicorn's graceful shutdown
# (new webhooks are answered 503, in-flight deliveries finish or are released for the next
# start) and the process exits 0. It starts no child processes, so it needs no init; add
# `--init` (docker run) or `init: true` (compose) if you want one anyway.
STOPSIGNAL SIGTERM
ENTRYPOINT ["bridge", "serve"]
CMD []
