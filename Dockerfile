# The Automator67 controller image: `automator67 serve` by default, `automator67 agent` with
# `docker run IMAGE agent ...`. Every setting is an env var (README "Configuration").
#
#   docker build -t automator67 .
#
# Needs BuildKit (the default builder of Docker 23+, and `DOCKER_BUILDKIT=1` on 20.10). Behind a
# proxy that intercepts TLS, give pip the proxy's CA bundle for the build only; it is mounted for
# the one `pip install` step and is in no layer:
#
#   docker build --secret id=ca-bundle,src=/etc/ssl/certs/ca-certificates.crt -t automator67 .
#
# BASE_IMAGE is any Debian-like image with python3 (3.11+) and its venv module; the runtime stage
# uses the same one, so the virtualenv's interpreter path is valid there.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS requirements
# Only the dependency list, so that the layer installing them is rebuilt when it changes and
# not when anything else in pyproject.toml does.
COPY pyproject.toml /src/pyproject.toml
RUN python3 -c "import tomllib; \
deps = tomllib.load(open('/src/pyproject.toml', 'rb'))['project']['dependencies']; \
open('/requirements.txt', 'w').write(''.join(d + '\n' for d in deps))"

FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python3 -m venv /opt/automator67
COPY --from=requirements /requirements.txt /requirements.txt
RUN --mount=type=secret,id=ca-bundle,required=false \
    if [ -f /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi; \
    /opt/automator67/bin/pip install --requirement /requirements.txt
WORKDIR /src
COPY pyproject.toml README.md ./
COPY controller/ controller/
COPY generated/ generated/
COPY sdk/python/ sdk/python/
RUN --mount=type=secret,id=ca-bundle,required=false \
    if [ -f /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi; \
    /opt/automator67/bin/pip install --no-deps . \
    && /opt/automator67/bin/automator67 --version

FROM ${BASE_IMAGE}
# A fixed numeric user, so that Kubernetes' runAsNonRoot can check it and volumes can be
# prepared for it (chown 10001:10001) before the container starts.
RUN groupadd --system --gid 10001 automator67 \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /var/lib/automator67 --shell /usr/sbin/nologin automator67 \
    && mkdir -p /var/lib/automator67 \
    && chown 10001:10001 /var/lib/automator67 \
    && chmod 0700 /var/lib/automator67
COPY --from=build /opt/automator67 /opt/automator67
# A container is reached through its own network namespace, so it listens on every address
# (JWT auth stays on: `--auth off` is refused there). Metrics are on, on the usual exporter port.
ENV PATH=/opt/automator67/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    A67_HOST=0.0.0.0 \
    PORT=50051 \
    A67_METRICS_PORT=9464 \
    A67_DATA_DIR=/var/lib/automator67
USER 10001:10001
WORKDIR /var/lib/automator67
VOLUME ["/var/lib/automator67"]
EXPOSE 50051 9464
# SIGTERM starts the ordered shutdown (health NOT_SERVING, agents told to reconnect, then
# A67_SHUTDOWN_GRACE_S for in-flight calls); give the container more than that to stop.
STOPSIGNAL SIGTERM
ENTRYPOINT ["automator67"]
CMD ["serve"]
