"""Logs are JSON lines (or plain under DEBUG) that carry the request id, user and path."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator

import pytest
from django.test import Client

from apps.accounts.roles import Role
from kaitoweb.observability.logs import JsonFormatter, PlainFormatter
from tests.factories import UserFactory
from tests.ops.conftest import django_run


@pytest.fixture
def captured() -> Iterator[tuple[io.StringIO, io.StringIO]]:
    """What the kaitoweb loggers write, in the JSON and in the plain format."""
    as_json, as_plain = io.StringIO(), io.StringIO()
    handlers = [logging.StreamHandler(as_json), logging.StreamHandler(as_plain)]
    handlers[0].setFormatter(JsonFormatter())
    handlers[1].setFormatter(PlainFormatter())
    logger = logging.getLogger("kaitoweb.request")
    level = logger.level
    logger.setLevel(logging.DEBUG)
    for handler in handlers:
        logger.addHandler(handler)
    yield as_json, as_plain
    for handler in handlers:
        logger.removeHandler(handler)
    logger.setLevel(level)


def test_a_request_gets_an_id_which_it_sends_back(db: None) -> None:
    response = Client().get("/healthz")
    assert len(response["X-Request-ID"]) == 32
    assert Client().get("/healthz")["X-Request-ID"] != response["X-Request-ID"]
    kept = Client().get("/healthz", HTTP_X_REQUEST_ID="lb-7f3a.1")
    assert kept["X-Request-ID"] == "lb-7f3a.1"
    # Whatever does not look like an id is replaced, so it cannot forge log lines.
    forged = Client().get("/healthz", HTTP_X_REQUEST_ID='x", "level": "INFO')
    assert len(forged["X-Request-ID"]) == 32


def test_a_request_is_one_json_line_with_its_id_user_path_status_and_duration(
    db: None, captured: tuple[io.StringIO, io.StringIO]
) -> None:
    as_json, as_plain = captured
    user = UserFactory.create(username="logged-viewer", role=Role.VIEWER)
    client = Client()
    client.force_login(user)
    response = client.get("/catalog/?family=phi", HTTP_X_REQUEST_ID="req-42")
    assert response.status_code == 200
    lines = [json.loads(raw) for raw in as_json.getvalue().splitlines()]
    line = next(entry for entry in lines if entry.get("request_id") == "req-42")
    assert line["logger"] == "kaitoweb.request"
    assert line["level"] == "INFO"
    assert line["message"] == "GET /catalog/ 200"  # the path, never the query string
    assert line["path"] == "/catalog/"
    assert line["user_id"] == user.pk
    assert line["status"] == 200
    assert line["view"] == "catalog:model_list"
    assert line["duration_ms"] > 0
    assert "req-42" in as_plain.getvalue() and "status=200" in as_plain.getvalue()


def test_probe_requests_are_logged_only_at_debug(
    db: None, captured: tuple[io.StringIO, io.StringIO]
) -> None:
    as_json, _ = captured
    Client().get("/healthz")
    line = json.loads(as_json.getvalue().splitlines()[-1])
    assert line["view"] == "healthz" and line["level"] == "DEBUG"


def test_an_exception_is_logged_with_its_traceback() -> None:
    try:
        raise ValueError("the cluster said no")
    except ValueError:
        record = logging.getLogger("kaitoweb.test").makeRecord(
            "kaitoweb.test", logging.ERROR, __file__, 1, "launch failed", (), sys.exc_info()
        )
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "launch failed"
    assert "ValueError: the cluster said no" in line["exception"]


def log_format_with(env: dict[str, str | None]) -> tuple[int, str]:
    result = django_run(
        "from django.conf import settings\nprint(settings.LOG_FORMAT)\n",
        {"DJANGO_SETTINGS_MODULE": "kaitoweb.settings", "LOG_FORMAT": None, **env},
    )
    return result.returncode, (result.stdout + result.stderr).strip()


PRODUCTION: dict[str, str | None] = {
    "DEBUG": "0",
    "SECRET_KEY": "a-production-like-secret-key-" + "k" * 30,
    "ENCRYPTION_KEYS": "dGVzdC1vbmx5LWtleS1ub3QtZm9yLXByb2R1Y3Rpb24=",
}


def test_the_format_is_json_in_production_and_plain_under_debug() -> None:
    assert log_format_with(PRODUCTION) == (0, "json")
    assert log_format_with({"DEBUG": "1"}) == (0, "plain")
    assert log_format_with({"DEBUG": "1", "LOG_FORMAT": "JSON"}) == (0, "json")
    assert log_format_with({**PRODUCTION, "LOG_FORMAT": "plain"}) == (0, "plain")


def test_an_unknown_format_stops_the_start_with_its_name() -> None:
    code, output = log_format_with({**PRODUCTION, "LOG_FORMAT": "xml"})
    assert code != 0
    assert "LOG_FORMAT='xml': use json or plain" in output
