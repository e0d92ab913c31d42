# One image for every service: ocpp-gateway, ocpp-adapter, ocpp-processor,
# ocpp-api, ocpp-cli. Pick one with the command, e.g. `docker run IMAGE ocpp-api`.
# The operator console's front-end libraries, from the npm registry at build
# time, as `make` fetches them (package-lock.json pins them); served by ocpp-api.
FROM node:20-slim AS console
WORKDIR /console
COPY adapters/console/package.json adapters/console/package-lock.json adapters/console/vendor.mjs ./
RUN npm ci --ignore-scripts --no-audit --no-fund --loglevel=error && node vendor.mjs

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY adapters adapters
COPY --from=console /console/static/vendor adapters/console/static/vendor
COPY processor processor
# A wheel-only install into a prefix the runtime stage copies whole.
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin ocpp
COPY --from=build /install /usr/local
USER ocpp
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    REDIS_URL=redis://redis:6379/0
# GET /readyz of the default command, ocpp-processor (Redis reachable and
# its consumer group in place). Other commands answer elsewhere: the adapter
# on 9102, the gateway on 9103, the API on 8000. Give them their own check
# (docker-compose.yml does; `docker run --health-cmd`).
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["ocpp-cli", "probe", "http://127.0.0.1:9101/readyz"]
CMD ["ocpp-processor"]
