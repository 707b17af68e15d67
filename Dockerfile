# syntax=docker/dockerfile:1
# The arkq image: `arq worker.WorkerSettings` by default; the compose file also runs `arkq fake-llm`
# (the SGLang emulator) from it. Build: `docker build -t arkq .` (or `docker compose build`).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    ARK_CONFIG=/app/config.yaml

RUN groupadd --system --gid 10001 arkq \
    && useradd --system --uid 10001 --gid arkq --no-create-home --home-dir /app --shell /usr/sbin/nologin arkq

WORKDIR /src

# Dependencies first, from pyproject.toml alone: this layer is rebuilt when pyproject.toml changes, not
# on every source edit. Runtime dependencies only (no [dev] extra).
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The project itself, installed as a regular (non-editable) package; the source tree is removed after.
COPY . ./
RUN pip install --no-cache-dir --no-deps . \
    && mkdir -p /app \
    && cp config.yaml /app/config.yaml \
    && rm -rf /src

# The installed package does not ship config.yaml: ARK_CONFIG (above) points the loader at this copy.
# Settings are overridden with ARK_* environment variables as usual.
WORKDIR /app
USER 10001:10001

CMD ["arq", "worker.WorkerSettings"]
