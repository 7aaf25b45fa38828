"""`manage.py check --deploy` passes with production settings, and fails on an insecure one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FERNET_KEY = "dGVzdC1vbmx5LWtleS1ub3QtZm9yLXByb2R1Y3Rpb24="

PRODUCTION = {
    "DEBUG": "0",
    "SECRET_KEY": "k4Y-" + "q9Zr7wP2mX5vL8nB3cT6yH1jF0dS4gA" * 2,
    "ENCRYPTION_KEYS": FERNET_KEY,
    "ALLOWED_HOSTS": "kaitoweb.example.com",
    "CSRF_TRUSTED_ORIGINS": "https://kaitoweb.example.com",
}


def check_deploy(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the check in a fresh interpreter with exactly this environment (nothing inherited
    from the test run but PATH, HOME and LANG)."""
    clean = {k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG"}}
    clean.update(
        DJANGO_SETTINGS_MODULE="kaitoweb.settings",
        KAITOWEB_VAR_DIR=str(tmp_path / "var"),
        **PRODUCTION,
    )
    clean.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_is_clean_with_production_settings(tmp_path: Path) -> None:
    result = check_deploy(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_check_deploy_is_clean_behind_a_tls_proxy_with_redis(tmp_path: Path) -> None:
    result = check_deploy(
        tmp_path, SECURE_PROXY_SSL_HEADER="1", REDIS_URL="redis://127.0.0.1:6379/0"
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_deploy_catches_an_insecure_setting(tmp_path: Path) -> None:
    result = check_deploy(tmp_path, SESSION_COOKIE_SECURE="0", SECURE_HSTS_SECONDS="0")
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "security.W012" in output  # SESSION_COOKIE_SECURE
    assert "security.W004" in output  # no HSTS


def test_check_deploy_catches_a_missing_https_redirect(tmp_path: Path) -> None:
    result = check_deploy(tmp_path, SECURE_SSL_REDIRECT="0")
    assert result.returncode != 0
    assert "security.W008" in result.stdout + result.stderr
