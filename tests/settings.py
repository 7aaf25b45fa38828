"""Settings for the test run: the real settings, with the secrets a test run may generate."""

from __future__ import annotations

import os

os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production-" + "x" * 20)
# A fixed key, so a Celery worker started by a test decrypts what the test process encrypted.
os.environ.setdefault("ENCRYPTION_KEYS", "dGVzdC1vbmx5LWtleS1ub3QtZm9yLXByb2R1Y3Rpb24=")
# A queue of this run's own, so a test's worker never takes a developer's tasks or vice versa.
os.environ.setdefault("CELERY_QUEUE", f"kaitoweb-test-{os.getpid()}")
os.environ.setdefault("ALLOWED_HOSTS", "testserver,localhost,127.0.0.1")
# The test client and the live server speak plain HTTP (production redirects to HTTPS).
os.environ.setdefault("SECURE_SSL_REDIRECT", "0")

from kaitoweb.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins in tests
# This run's own cache keys, so login rate-limit counters never carry over between runs.
CACHES["default"]["KEY_PREFIX"] = f"kaitoweb-test-{os.getpid()}"  # noqa: F405
STORAGES["staticfiles"]["BACKEND"] = "django.contrib.staticfiles.storage.StaticFilesStorage"  # noqa: F405
WHITENOISE_USE_FINDERS = True  # serve static files from their sources; no collectstatic in tests
WHITENOISE_AUTOREFRESH = True

if str(DATABASES["default"]["ENGINE"]).endswith("sqlite3"):  # noqa: F405
    # A file, not memory, so a Celery worker in another process sees the test database.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-kaitoweb.sqlite3")}  # noqa: F405
# Close each connection at the end of its request: the live server's keep-alive threads must
# not hold the test database open when it is dropped.
DATABASES["default"]["CONN_MAX_AGE"] = 0  # noqa: F405
