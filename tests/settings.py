"""Settings for the test run: the real settings, with the secrets a test run may generate."""

from __future__ import annotations

import os

from cryptography.fernet import Fernet

os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production-" + "x" * 20)
os.environ.setdefault("ENCRYPTION_KEYS", Fernet.generate_key().decode())
os.environ.setdefault("ALLOWED_HOSTS", "testserver,localhost,127.0.0.1")

from kaitoweb.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins in tests
STORAGES["staticfiles"]["BACKEND"] = "django.contrib.staticfiles.storage.StaticFilesStorage"  # noqa: F405
