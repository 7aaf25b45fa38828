"""Settings come from the environment and a bad value stops the app at start, saying which."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GOOD_KEY = "dGVzdC1vbmx5LWtleS1ub3QtZm9yLXByb2R1Y3Rpb24="


def start_with(**env: str) -> subprocess.CompletedProcess[str]:
    """Import the production settings in a fresh interpreter with exactly this environment."""
    clean = {k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG"}}
    clean.update(DJANGO_SETTINGS_MODULE="kaitoweb.settings", **env)
    code = (
        "import django; from django.conf import settings; django.setup(); "
        "print(settings.DATABASES['default']['ENGINE'], settings.CELERY_BROKER_URL, "
        "settings.DEBUG, ','.join(settings.ALLOWED_HOSTS))"
    )
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=clean, capture_output=True, text=True
    )


def test_it_defaults_to_sqlite_and_a_serverless_broker_in_debug() -> None:
    result = start_with(DEBUG="1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[:3] == [
        "django.db.backends.sqlite3",
        "filesystem://",
        "True",
    ]


def test_it_uses_postgresql_and_redis_when_given() -> None:
    result = start_with(
        DEBUG="0",
        SECRET_KEY="s" * 50,
        ENCRYPTION_KEYS=GOOD_KEY,
        ALLOWED_HOSTS="kaitoweb.example.com",
        DATABASE_URL="postgres://kaito:pw@db.internal:5433/kaitoweb?sslmode=require",
        REDIS_URL="redis://cache.internal:6379/2",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "django.db.backends.postgresql",
        "redis://cache.internal:6379/2",
        "False",
        "kaitoweb.example.com",
    ]


def test_secret_key_may_come_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("f" * 50 + "\n")
    result = start_with(SECRET_KEY_FILE=str(secret), ENCRYPTION_KEYS=GOOD_KEY)
    assert result.returncode == 0, result.stderr


def test_encryption_keys_may_come_from_a_file_one_a_line(tmp_path: Path) -> None:
    from cryptography.fernet import Fernet

    second = Fernet.generate_key().decode()
    keys = tmp_path / "keys"
    keys.write_text(f"{GOOD_KEY}\n{second}\n")
    clean = {k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG"}}
    clean.update(
        DJANGO_SETTINGS_MODULE="kaitoweb.settings",
        SECRET_KEY="s" * 50,
        ENCRYPTION_KEYS_FILE=str(keys),
    )
    code = (
        "import django; from django.conf import settings; django.setup(); "
        "print(' '.join(k.decode() for k in settings.ENCRYPTION_KEYS))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=clean, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [GOOD_KEY, second]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "SECRET_KEY is required when DEBUG is off"),
        ({"SECRET_KEY": "s" * 50}, "ENCRYPTION_KEYS is required when DEBUG is off"),
        (
            {"SECRET_KEY": "s" * 50, "ENCRYPTION_KEYS": "not-a-key"},
            "ENCRYPTION_KEYS entry 1 is not a Fernet key",
        ),
        ({"DEBUG": "maybe"}, "DEBUG='maybe' is not a boolean"),
        ({"DEBUG": "1", "DATABASE_URL": "mysql://db/x"}, "DATABASE_URL must start with postgres"),
        ({"DEBUG": "1", "DATABASE_URL": "postgres://db:5432/"}, "DATABASE_URL names no database"),
        ({"DEBUG": "1", "REDIS_URL": "http://cache"}, "REDIS_URL must start with redis://"),
        ({"DEBUG": "1", "SECRET_KEY_FILE": "/nonexistent/key"}, "SECRET_KEY_FILE=/nonexistent/key"),
        ({"DEBUG": "1", "CELERY_TASK_TIME_LIMIT": "soon"}, "CELERY_TASK_TIME_LIMIT='soon'"),
    ],
)
def test_a_bad_setting_stops_the_start_and_names_itself(env: dict[str, str], message: str) -> None:
    result = start_with(**env)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert message in result.stderr
