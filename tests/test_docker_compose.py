"""No Docker engine runs here, so the compose file's structure is what we can check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_it_runs_postgres_redis_web_worker_and_beat() -> None:
    services = compose()["services"]
    assert {"postgres", "redis", "web", "worker", "beat"} <= set(services)
    assert services["worker"]["command"][:4] == ["celery", "-A", "kaitoweb", "worker"]
    assert services["beat"]["command"][:4] == ["celery", "-A", "kaitoweb", "beat"]
    assert "gunicorn" in (ROOT / "Dockerfile").read_text()


def test_the_database_and_broker_have_health_checks_the_app_waits_for() -> None:
    services = compose()["services"]
    for name in ("postgres", "redis", "web", "worker"):
        assert services[name]["healthcheck"]["test"], name
    for name in ("web", "worker", "beat"):
        # the app waits for migrations, which wait for healthy PostgreSQL and Redis
        assert services[name]["depends_on"]["migrate"]["condition"] == (
            "service_completed_successfully"
        )
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["migrate"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "load_catalog" in " ".join(services["migrate"]["command"])


def test_the_app_reads_its_settings_from_an_env_file_whose_example_names_every_secret() -> None:
    services = compose()["services"]
    assert services["web"]["env_file"] == ".env"
    example = (ROOT / ".env.example").read_text()
    for name in ("SECRET_KEY", "ENCRYPTION_KEYS", "DATABASE_URL", "REDIS_URL", "ALLOWED_HOSTS"):
        assert f"\n{name}=" in example, name
    assert services["postgres"]["volumes"] and services["redis"]["volumes"]
    assert ".env" in (ROOT / ".gitignore").read_text().split()
