# One image for every Lyceum service. The command picks the service:
#   python -m gateway | python -m services.auth | python -m services.users | ...
# Configuration comes only from the environment (DATABASE_URL, REDIS_URL, AMQP_URL,
# JWKS_URL, HOST, PORT, ...); see docker-compose.yml and deploy/k8s/.

FROM python:3.11-slim AS build

# pip compiles the bytecode here, since the running containers cannot write it.
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src

# Runtime dependencies first (from pyproject.toml, without the dev extra, at the versions of
# constraints.txt), so that a code change does not reinstall them.
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install --no-cache-dir -c constraints.txt -r /tmp/requirements.txt

COPY shared ./shared
COPY gateway ./gateway
COPY services ./services
COPY launcher ./launcher
RUN pip install --no-cache-dir --no-deps . \
    && python -c "import gateway, services.auth, services.users"


FROM python:3.11-slim

LABEL org.opencontainers.image.title="lyceum" \
      org.opencontainers.image.description="Lyceum services (gateway, auth, users, ...): one image, the command picks the service"

# libmagic: the documents service decides an upload's type from its content (python-magic).
# Not pinned: the base image's Debian release fixes its version, and a rebuild takes its
# security updates.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libmagic1 \
    && rm -rf /var/lib/apt/lists/*

# A fixed numeric uid/gid, so that Kubernetes can check runAsNonRoot.
RUN groupadd --system --gid 10001 lyceum \
    && useradd --system --uid 10001 --gid lyceum --home-dir /app --no-create-home --shell /usr/sbin/nologin lyceum

COPY --from=build /opt/venv /opt/venv
RUN /opt/venv/bin/python -c "import magic; assert magic.from_buffer(b'%PDF-1.4', mime=True) == 'application/pdf'"

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0

# The code runs from site-packages; /app holds only the event catalogue (the webhooks
# service serves it) and nothing is written there (only /tmp needs to be writable).
WORKDIR /app
COPY docs/events /app/docs/events
ENV WEBHOOK_EVENT_SCHEMAS_DIR=/app/docs/events/schemas
USER 10001:10001

EXPOSE 8000 8001 8002 8003 8004 8005 8006

# For compose and plain docker; Kubernetes uses the probes in deploy/k8s instead.
# PORT is set per service (gateway 8000, auth 8001, users 8002, ...).
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=5 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '8000') + '/health', timeout=2)"]

CMD ["python", "-m", "gateway"]
