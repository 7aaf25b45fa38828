"""/metrics: requests by view, method and status; experiments, A/B runs and deployments by status;
only for the bearer of METRICS_TOKEN, or from loopback when none is set."""

from __future__ import annotations

from django.test import Client, override_settings
from prometheus_client.parser import text_string_to_metric_families

from apps.accounts.roles import Role
from apps.clusters.models import Cluster
from apps.deployments.models import Deployment
from apps.playground.models import Experiment
from tests.factories import UserFactory


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, by name and sorted labels."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = Client().get("/metrics")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    return samples(response.content.decode())


def requests_of(
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float], view: str, status: str
) -> float:
    key = (
        "kaitoweb_http_requests_total",
        (("method", "GET"), ("status", status), ("view", view)),
    )
    return found.get(key, 0.0)


def test_metrics_are_refused_to_other_hosts_when_no_token_is_set(db: None) -> None:
    assert Client(REMOTE_ADDR="10.1.2.3").get("/metrics").status_code == 403
    assert Client(REMOTE_ADDR="::1").get("/metrics").status_code == 200
    # A proxy on this host forwards other hosts' requests from loopback: never local.
    forwarded = Client().get("/metrics", HTTP_X_FORWARDED_FOR="203.0.113.9")
    assert forwarded.status_code == 403
    assert b"METRICS_TOKEN" in forwarded.content


@override_settings(METRICS_TOKEN="scrape-me-please")
def test_with_a_token_set_only_its_bearer_may_scrape(db: None) -> None:
    assert Client().get("/metrics").status_code == 403  # loopback is not enough any more
    wrong = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-me")
    assert wrong.status_code == 403
    basic = Client().get("/metrics", HTTP_AUTHORIZATION="Basic scrape-me-please")
    assert basic.status_code == 403
    right = Client(REMOTE_ADDR="10.1.2.3").get(
        "/metrics", HTTP_AUTHORIZATION="Bearer scrape-me-please"
    )
    assert right.status_code == 200
    assert b"kaitoweb_experiments" in right.content


def test_requests_are_counted_by_view_method_and_status(db: None) -> None:
    viewer = Client()
    viewer.force_login(UserFactory.create(username="metrics-viewer", role=Role.VIEWER))
    before = scrape()
    assert viewer.get("/catalog/").status_code == 200
    assert viewer.get("/catalog/").status_code == 200
    assert viewer.get("/no/such/page/").status_code == 404
    assert Client().get("/catalog/").status_code == 302  # to the login page
    after = scrape()
    assert (
        requests_of(after, "catalog:model_list", "200")
        - requests_of(before, "catalog:model_list", "200")
        == 2
    )
    assert (
        requests_of(after, "catalog:model_list", "302")
        - requests_of(before, "catalog:model_list", "302")
        == 1
    )
    # A 404 is one label value, not one per URL someone tried.
    assert requests_of(after, "unmatched", "404") - requests_of(before, "unmatched", "404") == 1
    assert not any("no/such" in str(labels) for _name, labels in after)
    count = (
        "kaitoweb_http_request_duration_seconds_count",
        (("method", "GET"), ("view", "catalog:model_list")),
    )
    assert after[count] - before.get(count, 0.0) == 3


def test_experiments_and_deployments_are_counted_by_status_from_the_database(db: None) -> None:
    for status in ("running", "running", "done"):
        Experiment.objects.create(name=f"e-{status}", prompt_set_name="short", status=status)
    cluster = Cluster.objects.create(name="counted", auth=Cluster.Auth.IN_CLUSTER)
    for name, status in (("a", "ready"), ("b", "ready"), ("c", "failed")):
        Deployment.objects.create(
            cluster=cluster,
            name=name,
            model_name="phi-4",
            vm_size="Standard_NC6s_v3",
            status=status,
        )
    found = scrape()

    def gauge(name: str, status: str) -> float:
        return found[(name, (("status", status),))]

    assert gauge("kaitoweb_experiments", "running") == 2
    assert gauge("kaitoweb_experiments", "done") == 1
    assert gauge("kaitoweb_experiments", "queued") == 0  # every status, so no series vanishes
    assert gauge("kaitoweb_deployments", "ready") == 2
    assert gauge("kaitoweb_deployments", "failed") == 1
    assert gauge("kaitoweb_deployments", "deleted") == 0
    assert gauge("kaitoweb_ab_runs", "queued") == 0
    Experiment.objects.filter(status="running").update(status="cancelled")
    again = samples(Client().get("/metrics").content.decode())
    assert again[("kaitoweb_experiments", (("status", "cancelled"),))] == 2
    assert again[("kaitoweb_experiments", (("status", "running"),))] == 0
