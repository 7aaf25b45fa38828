# kaitoweb: the web app, the Celery worker and beat all run from this image.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    DJANGO_SETTINGS_MODULE=kaitoweb.settings STATIC_ROOT=/app/staticfiles
WORKDIR /app
RUN useradd --create-home --uid 10001 kaitoweb
COPY pyproject.toml README.md ./
COPY . .
RUN pip install . && \
    DEBUG=1 python manage.py collectstatic --no-input -v 0 && \
    mkdir -p /app/var && chown -R kaitoweb /app/var
USER kaitoweb
EXPOSE 8000
CMD ["gunicorn", "kaitoweb.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3", "--access-logfile", "-"]
