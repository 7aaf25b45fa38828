"""kaitoweb settings, all from the environment (see README "Configuration").

With no DATABASE_URL the app uses SQLite under var/; with no REDIS_URL, Celery uses kombu's
filesystem transport under var/celery/, which needs no server and still carries tasks between
separate processes (the web server and the worker) on one machine.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

from kaitoweb.env import (
    check_redis_url,
    database_from_url,
    env_bool,
    env_int,
    env_list,
    env_str,
)
from kaitoweb.observability.logs import logging_config
from kaitoweb.redaction import install_log_redaction

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("KAITOWEB_VAR_DIR", str(BASE_DIR / "var")))
REFERENCE_DIR = Path(env_str("KAITOWEB_REFERENCE_DIR", str(BASE_DIR / "reference")))

DEBUG = env_bool("DEBUG", False)

SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is required when DEBUG is off (set SECRET_KEY or SECRET_KEY_FILE)"
        )
    SECRET_KEY = "insecure-dev-only-" + hashlib.sha256(str(BASE_DIR).encode()).hexdigest()

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])


def _encryption_keys() -> list[bytes]:
    """Fernet keys for secrets at rest; the first encrypts, all decrypt (key rotation)."""
    raw = env_list("ENCRYPTION_KEYS", [])
    if not raw:
        if not DEBUG:
            raise ImproperlyConfigured(
                "ENCRYPTION_KEYS is required when DEBUG is off: one or more comma-separated "
                "Fernet keys (python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())')"
            )
        digest = hashlib.sha256(("kaitoweb-dev-encryption:" + SECRET_KEY).encode()).digest()
        return [base64.urlsafe_b64encode(digest)]
    keys = []
    for position, key in enumerate(raw, start=1):
        try:
            Fernet(key.encode())
        except ValueError:
            raise ImproperlyConfigured(
                f"ENCRYPTION_KEYS entry {position} is not a Fernet key "
                "(32 url-safe base64-encoded bytes)"
            ) from None
        keys.append(key.encode())
    return keys


ENCRYPTION_KEYS = _encryption_keys()

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_htmx",
    "apps.accounts",
    "apps.catalog",
    "apps.audit",
    "apps.clusters",
    "apps.deployments",
    "apps.playground",
]

MIDDLEWARE = [
    # First: the request id, the request log line and the request metrics cover everything below.
    "kaitoweb.observability.middleware.RequestObservationMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "kaitoweb.security.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "kaitoweb.urls"
WSGI_APPLICATION = "kaitoweb.wsgi.application"
ASGI_APPLICATION = "kaitoweb.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "apps.accounts.context_processors.navigation",
            ],
        },
    },
]

DATABASE_URL = env_str("DATABASE_URL")
if DATABASE_URL:
    DATABASES = {"default": database_from_url(DATABASE_URL)}
else:
    VAR_DIR.mkdir(parents=True, exist_ok=True)  # SQLite makes the file, not its folder
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": env_str("SQLITE_PATH", str(VAR_DIR / "kaitoweb.sqlite3")),
            # The web server and the Celery worker write at once: WAL and immediate
            # transactions turn "database is locked" into a short wait.
            "OPTIONS": {
                "init_command": "PRAGMA journal_mode=wal; PRAGMA synchronous=normal;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
            },
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(BASE_DIR / "staticfiles")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = DEBUG

# Celery (namespace CELERY_ in this module; see kaitoweb/celery.py)
REDIS_URL = env_str("REDIS_URL")
CELERY_BROKER_DIR = VAR_DIR / "celery"
if REDIS_URL:
    CELERY_BROKER_URL = check_redis_url(REDIS_URL)
    CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {
        "visibility_timeout": env_int("REDIS_VISIBILITY_TIMEOUT", 3600)
    }
else:
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(CELERY_BROKER_DIR / "queue"),
        "data_folder_out": str(CELERY_BROKER_DIR / "queue"),
        "processed_folder": str(CELERY_BROKER_DIR / "processed"),
        "control_folder": str(CELERY_BROKER_DIR / "control"),
        "store_processed": False,
    }
CELERY_TASK_DEFAULT_QUEUE = env_str("CELERY_QUEUE", "kaitoweb")
CELERY_TASK_IGNORE_RESULT = True  # the UI reads database rows, never task results
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 300)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 360)
CELERY_TASK_ALWAYS_EAGER = False
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A restarted broker is waited for, not given up on (None: retry for ever).
CELERY_BROKER_CONNECTION_RETRY = True
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
CELERY_BEAT_SCHEDULE = {
    # Brings every active deployment up to date from its cluster and takes over launches,
    # teardowns and follows that a dead worker left unfinished (apps/deployments/services.py).
    "deployments-reconcile": {
        "task": "apps.deployments.tasks.deployments_reconcile",
        "schedule": float(env_int("DEPLOYMENTS_RECONCILE_SECONDS", 15)),
        "options": {"expires": 60},
    },
    # Restarts experiment task chains a dead worker, a lost message or a restarted broker left
    # unfinished; fails, with the reason, an experiment that cannot go on (experiments.py).
    "experiments-resume": {
        "task": "apps.playground.tasks.experiments_resume",
        "schedule": float(env_int("EXPERIMENTS_RESUME_SECONDS", 15)),
        "options": {"expires": 60},
    },
}

# Security (README "Security"): every default is the secure one when DEBUG is off; each can be
# changed from the environment, e.g. SECURE_SSL_REDIRECT=0 for plain HTTP on localhost.
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_AGE = env_int("SESSION_COOKIE_AGE", 12 * 3600)  # a working day, then sign in again
SESSION_EXPIRE_AT_BROWSER_CLOSE = env_bool("SESSION_EXPIRE_AT_BROWSER_CLOSE", False)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)
# No script reads the CSRF cookie: pages hand htmx the token through hx-headers (base.html).
CSRF_COOKIE_HTTPONLY = True
CSRF_COOKIE_SAMESITE = "Lax"
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
# Probes and scrapers speak plain HTTP to the pod; they are never redirected.
SECURE_REDIRECT_EXEMPT = [r"^healthz/?$", r"^readyz/?$", r"^metrics/?$"]
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31_536_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)
# Only behind a proxy that sets X-Forwarded-Proto itself (an ingress, a load balancer): a client
# could send the header too when no proxy strips it.
if env_bool("SECURE_PROXY_SSL_HEADER", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# How many proxies in front of the app append to X-Forwarded-For (for the login rate limit's
# client address); 0: the peer address is the client.
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
DEFAULT_EXCEPTION_REPORTER_FILTER = "kaitoweb.security.SecretsExceptionReporterFilter"
DEFAULT_EXCEPTION_REPORTER = "kaitoweb.security.SecretsExceptionReporter"

# Login rate limit (apps/accounts/login_limits.py): after this many failures within the window,
# for one username or one client address, further attempts are refused until the window ends.
LOGIN_MAX_FAILURES_PER_USERNAME = env_int("LOGIN_MAX_FAILURES_PER_USERNAME", 5)
LOGIN_MAX_FAILURES_PER_IP = env_int("LOGIN_MAX_FAILURES_PER_IP", 20)
LOGIN_FAILURE_WINDOW_SECONDS = env_int("LOGIN_FAILURE_WINDOW_SECONDS", 15 * 60)

# Endpoint URLs users enter (kaitoweb/urlcheck.py): the cloud metadata addresses and link-local
# ranges are refused unless this is on (or an admin allows them under Admin > Security settings).
ALLOW_LINK_LOCAL_ENDPOINTS = env_bool("ALLOW_LINK_LOCAL_ENDPOINTS", False)

# The cache holds the login rate limit's counters, so it must be shared by every web process
# (gunicorn runs several workers): Redis when there is one, else files under var/.
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "kaitoweb",
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "cache"),
            "KEY_PREFIX": "kaitoweb",
        }
    }

# Logs (kaitoweb/observability/logs.py): one JSON object a line, with the request id, user and
# path or the Celery task, unless LOG_FORMAT=plain; plain by default under DEBUG.
LOG_FORMAT = env_str("LOG_FORMAT", "plain" if DEBUG else "json").strip().lower()
LOGGING = logging_config(log_format=LOG_FORMAT, level=env_str("LOG_LEVEL", "INFO"))
# Every log record, from any logger, has credentials redacted (kaitoweb/redaction.py).
install_log_redaction()
# /metrics answers a request with "Authorization: Bearer <METRICS_TOKEN>"; with none set, only
# direct requests from loopback (kaitoweb/observability/views.py).
METRICS_TOKEN = env_str("METRICS_TOKEN")
