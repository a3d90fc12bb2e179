# clinrisk service image: locked dependencies, committed models baked in, non-root, health check.
# Serving only: requirements-runtime.lock has no XGBoost, scikit-learn or SciPy (models/ reads
# boosters from XGBoost's JSON model format itself), and training/ is not copied or installed.
FROM python:3.11-slim AS build
WORKDIR /src
COPY requirements-runtime.lock pyproject.toml README.md ./
RUN python -m venv /opt/venv && /opt/venv/bin/pip install --no-cache-dir -r requirements-runtime.lock
COPY models ./models
COPY service ./service
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 clinrisk && mkdir -p /var/lib/clinrisk \
    && chown clinrisk /var/lib/clinrisk
COPY --from=build /opt/venv /opt/venv
COPY --chown=root:root models /app/models
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    OMP_NUM_THREADS=1 \
    CLINRISK_MODELS_DIR=/app/models \
    CLINRISK_DATABASE_URL=sqlite:////var/lib/clinrisk/audit.db \
    CLINRISK_API_KEYS_FILE=/var/lib/clinrisk/api_keys.json
# CLINRISK_PSEUDONYM_KEY must come from the deployment's secret store.
USER clinrisk
WORKDIR /app
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s --start-period=20s \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health/ready', timeout=2).status != 200)"
# The audit database is migrated once before the workers start (they also check, under a lock).
# No access log: uvicorn's would carry query strings; the service logs route templates.
CMD ["sh", "-c", "clinrisk db upgrade && exec uvicorn service.main:app --host 0.0.0.0 --port 8000 --workers 2 --no-access-log"]
