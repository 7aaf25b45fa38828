"""/healthz says the process is up; /readyz says whether the database and the broker answer."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client, override_settings

from kaitoweb.observability import probes
from tests.ops.conftest import closed_port, django_run


@pytest.fixture
def anonymous() -> Client:
    return Client()


def test_healthz_answers_anyone_without_touching_the_database(anonymous: Client) -> None:
    # No database fixture: pytest-django makes any database access here an error.
    response = anonymous.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "no-cache" in response["Cache-Control"]


def test_pages_still_need_a_login(anonymous: Client, db: None) -> None:
    response = anonymous.get("/catalog/")
    assert response.status_code == 302
    assert "/accounts/login/" in response["Location"]


def test_readyz_is_ok_when_the_database_and_the_broker_answer(
    anonymous: Client, transactional_db: None
) -> None:
    response = anonymous.get("/readyz")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"] == {"database": {"ok": True}, "broker": {"ok": True}}


def test_readyz_is_503_naming_the_broker_when_redis_does_not_answer(
    anonymous: Client, transactional_db: None
) -> None:
    with override_settings(CELERY_BROKER_URL=f"redis://127.0.0.1:{closed_port()}/0"):
        response = anonymous.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["down"] == ["broker"]
    assert body["checks"]["database"] == {"ok": True}
    assert body["checks"]["broker"]["ok"] is False
    assert "ConnectionError" in body["checks"]["broker"]["error"]


def test_readyz_is_503_when_the_filesystem_brokers_folder_cannot_be_written(
    anonymous: Client, transactional_db: None, tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    options = {"data_folder_in": str(tmp_path / "a-file" / "queue"), "data_folder_out": ""}
    with override_settings(
        CELERY_BROKER_URL="filesystem://", CELERY_BROKER_TRANSPORT_OPTIONS=options
    ):
        response = anonymous.get("/readyz")
    assert response.status_code == 503
    assert response.json()["down"] == ["broker"]
    assert "a-file" in response.json()["checks"]["broker"]["error"]


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never says a word (a hung Redis)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield int(server.getsockname()[1])


def test_a_broker_that_hangs_fails_the_check_at_its_deadline(
    silent_server: int, transactional_db: None
) -> None:
    with override_settings(CELERY_BROKER_URL=f"redis://127.0.0.1:{silent_server}/0"):
        results = {r.name: r for r in probes.run_checks(timeout=0.5)}
    assert results["database"].ok
    assert not results["broker"].ok
    assert "imeout" in results["broker"].detail or "no answer within" in results["broker"].detail


def test_readyz_is_503_naming_the_database_when_postgresql_is_down() -> None:
    """In a process of its own whose DATABASE_URL points at a port where nothing listens."""
    code = (
        "from django.test import Client\n"
        "r = Client().get('/readyz')\n"
        "print(r.status_code)\n"
        "print(r.content.decode())\n"
    )
    result = django_run(
        code,
        {
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "DATABASE_URL": f"postgres://kaitoweb@127.0.0.1:{closed_port()}/kaitoweb",
            "REDIS_URL": "",
            "KAITOWEB_VAR_DIR": str(settings.VAR_DIR),
        },
    )
    assert result.returncode == 0, result.stderr[-3000:]
    status, body = result.stdout.strip().splitlines()[-2:]
    assert status == "503"
    answer = json.loads(body)
    assert answer["down"] == ["database"]
    assert answer["checks"]["broker"] == {"ok": True}
    assert "OperationalError" in answer["checks"]["database"]["error"]
