# CPU image of the translation service: FastAPI + onnxruntime, no torch, no compilers, non-root.
#
#   docker build -t mt-service .
#   docker run -p 8000:8000 mt-service
#
# BASE_IMAGE needs python3 (3.11+) with the venv module; both stages use it, so the virtual environment built in
# the first stage runs unchanged in the second. CI builds it from a locally-made Debian stand-in (deploy/ci/).
# The models under models/ are baked in at /app/models; mount a volume there (or set MT_MODELS_DIR) to replace them.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/venv
COPY requirements/serve.in constraints.txt /tmp/requirements/
RUN /opt/venv/bin/python -m pip install -r /tmp/requirements/serve.in -c /tmp/requirements/constraints.txt \
    && /opt/venv/bin/python -m pip uninstall --yes setuptools pip \
    && /opt/venv/bin/python -c "import importlib.util as u; assert not u.find_spec('torch'), 'torch in the serving image'"
COPY inference/ /app/inference/
COPY service/ /app/service/
RUN /opt/venv/bin/python -m compileall -q /app/inference /app/service

FROM ${BASE_IMAGE} AS runtime
RUN groupadd --system --gid 10001 mt \
    && useradd --system --uid 10001 --gid mt --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin mt
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app/inference /app/inference
COPY --from=build /app/service /app/service
COPY models/ /app/models/
WORKDIR /app
# ORT_DISABLE_TELEMETRY: onnxruntime >= 1.32 otherwise writes a device id and tries to upload usage events.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MT_MODELS_DIR=/app/models \
    MT_DEVICE=cpu \
    MT_LOG_LEVEL=INFO \
    ORT_DISABLE_TELEMETRY=1
USER 10001:10001
EXPOSE 8000
# Ready = models loaded and warmed (the endpoint answers 503 before). urlopen raises on any status >= 400.
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health/ready', timeout=4)"]
# Exec form: the Python process is PID 1 and receives SIGTERM itself; the server then stops accepting
# connections and lets in-flight requests finish (MT_SHUTDOWN_TIMEOUT_S) before it exits with status 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["python3", "-m", "service"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
