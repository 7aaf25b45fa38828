# kaitoweb: the web app, the Celery worker, beat and (for the demo) kaitosim all run from this image.
FROM python:3.11.10-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    DJANGO_SETTINGS_MODULE=kaitoweb.settings STATIC_ROOT=/app/staticfiles
WORKDIR /app
RUN useradd --create-home --uid 10001 kaitoweb
# Dependencies first, so a code change does not reinstall them.
COPY pyproject.toml README.md ./
RUN pip install .
COPY . .
# Static files are collected into the image and served by WhiteNoise (compressed, hashed names).
# With DEBUG off, as the app runs, so the manifest WhiteNoise's storage reads is written; the key
# and the all-zero Fernet key exist only for this build step and sign or encrypt nothing.
RUN DEBUG=0 SECRET_KEY=collectstatic-build-step-only \
    ENCRYPTION_KEYS=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= \
    python manage.py collectstatic --no-input -v 0 && \
    mkdir -p /app/var/kaitosim && chown -R kaitoweb:kaitoweb /app/var
USER kaitoweb
EXPOSE 8000
CMD ["gunicorn", "kaitoweb.wsgi:application", "--config=python:kaitoweb.observability.gunicorn", "--bind=0.0.0.0:8000", "--workers=3", "--timeout=120"]
