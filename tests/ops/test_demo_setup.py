"""`manage.py demo_setup` registers a running kaitosim as a cluster and its Foundry as targets,
and brings both up to date after the simulator restarts with new credentials."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from apps.catalog.services import LoadReport
from apps.clusters.models import Cluster
from apps.playground import clients
from apps.playground.models import Target
from kaitosim.server import start

DEMO_TARGETS = {"foundry-phi-4-mini-instruct", "foundry-phi-4", "foundry-gpt-4.1-mini"}
CHAT = clients.ChatRequest(prompt="Where should we run Phi-4?", max_tokens=8)


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "kaitosim"


@pytest.fixture
def simulator(state_dir: Path) -> Iterator[list[Any]]:
    """Simulators on one state directory, as a restarted kaitosim container leaves it."""
    handles: list[Any] = []
    handles.append(start(port=0, foundry_port=0, speed=1000.0, state_dir=state_dir))
    yield handles
    for handle in handles:
        handle.stop()


def demo_setup(state_dir: Path, wait: float = 10.0) -> None:
    call_command("demo_setup", state_dir=state_dir, wait=wait)


def test_the_simulator_becomes_a_checked_cluster_and_foundry_targets_that_answer(
    catalog: LoadReport, simulator: list[Any], state_dir: Path
) -> None:
    handle = simulator[0]
    demo_setup(state_dir)
    cluster = Cluster.objects.get(name="kaitosim")
    assert cluster.check_ok is True and cluster.kaito_installed is True
    assert cluster.api_server == handle.api_url
    assert cluster.clock_speed == 1000.0
    targets = {t.name: t for t in Target.objects.all()}
    assert set(targets) == DEMO_TARGETS
    phi = targets["foundry-phi-4"]
    assert phi.endpoint_url == f"{handle.foundry_url}/openai/v1/"
    assert phi.api_key == handle.foundry_key
    assert phi.foundry_model is not None and phi.foundry_model.name == "Phi-4"
    assert phi.cost_basis == Target.CostBasisKind.PER_TOKEN and phi.input_per_1m is not None
    measured = clients.measure_sync(phi.endpoint(), CHAT, timeout_s=30)
    assert measured.ok, measured.error_message


def test_after_a_restart_it_updates_the_credentials_and_makes_nothing_twice(
    catalog: LoadReport, simulator: list[Any], state_dir: Path
) -> None:
    demo_setup(state_dir)
    old_kubeconfig = Cluster.objects.get(name="kaitosim").kubeconfig
    simulator[0].stop()
    restarted = start(port=0, foundry_port=0, speed=1000.0, state_dir=state_dir)
    simulator.append(restarted)
    demo_setup(state_dir)
    assert Cluster.objects.count() == 1 and Target.objects.count() == len(DEMO_TARGETS)
    cluster = Cluster.objects.get(name="kaitosim")
    assert cluster.kubeconfig != old_kubeconfig
    assert cluster.api_server == restarted.api_url and cluster.check_ok is True
    phi = Target.objects.get(name="foundry-phi-4")
    assert phi.api_key == restarted.foundry_key
    measured = clients.measure_sync(phi.endpoint(), CHAT, timeout_s=30)
    assert measured.ok, measured.error_message


def test_without_a_simulator_it_says_which_file_is_missing(db: None, tmp_path: Path) -> None:
    with pytest.raises(CommandError, match=r"kubeconfig is missing"):
        demo_setup(tmp_path / "nothing-here", wait=0)
    assert not Cluster.objects.exists()


def test_files_left_by_a_stopped_simulator_are_not_registered(
    catalog: LoadReport, simulator: list[Any], state_dir: Path
) -> None:
    simulator[0].stop()
    with pytest.raises(CommandError, match="the simulator does not answer: cannot reach"):
        demo_setup(state_dir, wait=1.0)
    assert not Cluster.objects.exists() and not Target.objects.exists()
