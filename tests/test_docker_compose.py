"""No Docker engine runs here, so the compose file's structure is what we can check.

(`docker compose config` would also resolve the file, but the compose plugin is not in Debian's
docker CLI package that CI could install, so it is not used.)
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from django.conf import settings

from apps.accounts.management.commands.demo_setup import Command as DemoSetup
from kaitosim.__main__ import parse_arguments

ROOT = Path(__file__).resolve().parents[1]
APP_SERVICES = ("migrate", "web", "worker", "beat")


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def test_it_runs_postgres_redis_web_worker_and_beat() -> None:
    services = compose()["services"]
    assert {"postgres", "redis", "web", "worker", "beat"} <= set(services)
    assert services["worker"]["command"][:4] == ["celery", "-A", "kaitoweb", "worker"]
    assert services["beat"]["command"][:4] == ["celery", "-A", "kaitoweb", "beat"]


def test_the_web_app_is_gunicorn_with_the_metrics_hooks() -> None:
    web = compose()["services"]["web"]
    assert web["command"][:2] == ["gunicorn", "kaitoweb.wsgi:application"]
    assert "--config=python:kaitoweb.observability.gunicorn" in web["command"]
    assert "--bind=0.0.0.0:8000" in web["command"]
    assert web["ports"] == ["8000:8000"]
    assert '"gunicorn", "kaitoweb.wsgi:application"' in dockerfile()  # the image's default too


def test_every_long_running_service_has_a_health_check() -> None:
    services = compose()["services"]
    for name, service in services.items():
        if service.get("restart") == "no":
            continue  # one-shot jobs (migrate, demo-setup) exit when done
        test = service["healthcheck"]["test"]
        assert test and test[0] in ("CMD", "CMD-SHELL"), name
    web_check = " ".join(services["web"]["healthcheck"]["test"])
    assert "http://127.0.0.1:8000/healthz" in web_check  # the liveness endpoint, no login


def test_the_app_waits_for_migrations_which_wait_for_healthy_postgres_and_redis() -> None:
    services = compose()["services"]
    for name in ("web", "worker", "beat"):
        assert services[name]["depends_on"]["migrate"]["condition"] == (
            "service_completed_successfully"
        )
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["migrate"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "load_catalog" in " ".join(services["migrate"]["command"])
    assert services["migrate"]["restart"] == "no"


def test_the_demo_profile_runs_kaitosim_and_nothing_else_needs_it() -> None:
    services = compose()["services"]
    demo = {name for name, s in services.items() if "demo" in (s.get("profiles") or [])}
    assert demo == {"kaitosim", "demo-setup"}
    for name, service in services.items():
        if name not in demo:
            assert not service.get("profiles"), name
            assert not set(service.get("depends_on") or {}) & demo, name
    kaitosim = services["kaitosim"]
    assert kaitosim["command"][:3] == ["python", "-m", "kaitosim"]
    # Its flags are ones kaitosim accepts (compose's ${...} defaults filled in).
    flags = [re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", part) for part in kaitosim["command"][3:]]
    arguments = parse_arguments(flags)
    assert arguments.host == kaitosim["hostname"] == "kaitosim"  # the name others reach it by
    assert arguments.port == 6443 and arguments.foundry_port == 8443
    state = str(arguments.state_dir)
    assert f"kaitosim-state:{state}" in kaitosim["volumes"]
    assert "kaitosim:6443/healthz" in " ".join(kaitosim["healthcheck"]["test"])
    setup = services["demo-setup"]
    assert setup["depends_on"]["kaitosim"]["condition"] == "service_healthy"
    assert setup["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert setup["command"][:3] == ["python", "manage.py", "demo_setup"]
    assert f"--state-dir={state}" in setup["command"]
    assert f"kaitosim-state:{state}:ro" in setup["volumes"]
    # The web app sees the same kubeconfig, for "Add the local simulator".
    assert services["web"]["environment"]["KAITOSIM_KUBECONFIG"] == f"{state}/kubeconfig"
    assert f"kaitosim-state:{state}:ro" in services["web"]["volumes"]


def test_the_demo_setup_command_takes_the_flags_compose_gives_it() -> None:
    setup = compose()["services"]["demo-setup"]
    parser = DemoSetup().create_parser("manage.py", "demo_setup")
    options = parser.parse_args(setup["command"][3:])
    assert options.wait > 0


def test_every_named_volume_is_declared_and_the_data_is_on_volumes() -> None:
    document = compose()
    declared = set(document["volumes"])
    used = set()
    for service in document["services"].values():
        for volume in service.get("volumes") or []:
            source = volume.split(":", 1)[0]
            if not source.startswith((".", "/")):
                used.add(source)
    assert used == declared
    services = document["services"]
    assert "postgres-data:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    assert "redis-data:/data" in services["redis"]["volumes"]
    assert "--appendonly" in services["redis"]["command"]


def test_the_app_reads_its_settings_from_an_env_file_whose_example_names_every_secret() -> None:
    services = compose()["services"]
    for name in (*APP_SERVICES, "demo-setup"):
        assert services[name]["env_file"] == ".env", name
    example = (ROOT / ".env.example").read_text()
    for name in (
        "SECRET_KEY",
        "ENCRYPTION_KEYS",
        "DATABASE_URL",
        "REDIS_URL",
        "ALLOWED_HOSTS",
        "POSTGRES_PASSWORD",
        "METRICS_TOKEN",
        "LOG_FORMAT",
    ):
        assert f"\n{name}=" in example, name
    assert ".env" in (ROOT / ".gitignore").read_text().split()
    assert ".env" in (ROOT / ".dockerignore").read_text().split()


def test_no_secret_is_written_in_the_compose_file() -> None:
    for name, service in compose()["services"].items():
        environment = service.get("environment") or {}
        for key, value in environment.items():
            if re.search(r"SECRET|KEY(S)?$|TOKEN|PASSWORD", key):
                assert re.fullmatch(r"\$\{\w+(:\?[^}]*)?\}", str(value)), (name, key)


def test_images_are_pinned() -> None:
    for name, service in compose()["services"].items():
        image = service["image"]
        assert re.search(r":\d+\.\d+", image), f"{name}: {image}"
    base = re.search(r"^FROM (\S+)", dockerfile(), re.MULTILINE)
    assert base and re.search(r":\d+\.\d+\.\d+", base.group(1)), "pin the Python image"


def test_the_app_containers_keep_prometheus_values_in_a_tmpfs_of_their_own() -> None:
    services = compose()["services"]
    for name in ("web", "worker"):
        directory = services[name]["environment"]["PROMETHEUS_MULTIPROC_DIR"]
        assert any(t.split(":")[0] == directory for t in services[name]["tmpfs"]), name
    assert services["worker"]["environment"]["CELERY_METRICS_PORT"] == "9808"
    assert services["worker"]["expose"] == ["9808"]


def test_the_images_static_files_are_collected_as_production_reads_them(tmp_path: Path) -> None:
    """The Dockerfile's collectstatic, with its environment, writes the manifest that the
    production storage (DEBUG off) needs to render any page."""
    line = next(
        line for line in dockerfile().replace("\\\n", " ").splitlines() if "collectstatic" in line
    )
    assignments = dict(re.findall(r"\b([A-Z_]+)=(\S+)", line.split("python manage.py")[0]))
    assert assignments["DEBUG"] == "0"
    env = {
        "PATH": "/usr/bin:/bin",
        "DJANGO_SETTINGS_MODULE": "kaitoweb.settings",
        "STATIC_ROOT": str(tmp_path / "static"),
        "KAITOWEB_VAR_DIR": str(tmp_path / "var"),
        **assignments,
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--no-input", "-v", "0"],
        env=env,
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = tmp_path / "static" / "staticfiles.json"
    assert manifest.is_file()
    assert "vendor/htmx" in manifest.read_text()
