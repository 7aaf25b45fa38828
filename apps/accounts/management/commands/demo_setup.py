"""``manage.py demo_setup``: register a running kaitosim as a cluster, and its Foundry as targets.

kaitosim writes its kubeconfig and ``endpoints.json`` (Foundry URL and key, clock speed) into its
state directory each time it starts, with new tokens, CA and key. This command waits until that
simulator answers with those credentials, then creates (or brings up to date) the ``kaitosim``
cluster and one Foundry target per demo model, so a fresh ``docker compose --profile demo up``
or ``python3 dev.py run`` is ready to deploy and compare. Idempotent: run it after every
simulator restart.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from apps.clusters import kube
from apps.clusters.models import Cluster
from apps.clusters.services import ClusterRefused, cluster_check, cluster_create, cluster_update
from apps.playground.models import Target
from apps.playground.services import target_save

CLUSTER_NAME = "kaitosim"
# Foundry deployments kaitosim serves, as the catalog names them: two that KAITO also runs, one
# that only Foundry sells.
DEMO_FOUNDRY_MODELS = ("Phi-4-mini-instruct", "Phi-4", "gpt-4.1-mini")


class Command(BaseCommand):
    help = "Register a running kaitosim as the 'kaitosim' cluster and its Foundry as targets."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--state-dir",
            type=Path,
            default=Path("var/kaitosim"),
            help="kaitosim's --state-dir: where its kubeconfig and endpoints.json are",
        )
        parser.add_argument(
            "--wait",
            type=float,
            default=0.0,
            help="seconds to wait for the simulator to answer (default: do not wait)",
        )
        parser.add_argument("--region", default="eastus", help="Azure region to label them with")

    def handle(self, *args: Any, **options: Any) -> None:
        state_dir: Path = options["state_dir"]
        kubeconfig, endpoints = self._wait_for_simulator(state_dir, float(options["wait"]))
        cluster = self._cluster(kubeconfig, endpoints, region=options["region"])
        report = cluster_check(cluster=cluster)
        if not report.ok:
            raise CommandError(f"cluster {cluster.name}: " + "; ".join(report.problems))
        self.stdout.write(
            f"cluster {cluster.name}: Kubernetes {report.server_version}, KAITO ready "
            f"({cluster.api_server}, {cluster.clock_speed:g}x)"
        )
        foundry_url = str(endpoints.get("foundryUrl") or "")
        if not foundry_url:
            self.stdout.write("kaitosim runs no Foundry emulator: no Foundry targets made")
            return
        for model in DEMO_FOUNDRY_MODELS:
            target = self._foundry_target(
                model, foundry_url, str(endpoints.get("foundryKey") or ""), options["region"]
            )
            self.stdout.write(f"target {target.name}: {target.model_name} at {target.endpoint_url}")

    def _read(self, state_dir: Path) -> tuple[str, dict[str, Any]]:
        kubeconfig_path, endpoints_path = state_dir / "kubeconfig", state_dir / "endpoints.json"
        try:
            kubeconfig = kubeconfig_path.read_text()
            endpoints = json.loads(endpoints_path.read_text())
        except FileNotFoundError as error:
            raise CommandError(
                f"no simulator state in {state_dir}: {error.filename} is missing (is kaitosim "
                "running with this --state-dir?)"
            ) from None
        except (OSError, ValueError) as error:
            raise CommandError(f"cannot read the simulator state in {state_dir}: {error}") from None
        if not isinstance(endpoints, dict):
            raise CommandError(f"{endpoints_path} is not a JSON object")
        return kubeconfig, endpoints

    def _wait_for_simulator(self, state_dir: Path, wait: float) -> tuple[str, dict[str, Any]]:
        """The state files, once the API server they describe answers an authenticated call
        (files left by an earlier run point at a server that is gone or has other tokens)."""
        deadline = time.monotonic() + wait
        while True:
            try:
                kubeconfig, endpoints = self._read(state_dir)
                credentials = kube.Credentials(kubeconfig=kubeconfig, context=CLUSTER_NAME)
                with kube.Kube(credentials, timeout=(3.0, 5.0)) as api:
                    api.workspaces_discoverable()
                return kubeconfig, endpoints
            except (CommandError, kube.KubeError) as error:
                if time.monotonic() >= deadline:
                    message = error.message if isinstance(error, kube.KubeError) else str(error)
                    raise CommandError(f"the simulator does not answer: {message}") from None
            time.sleep(1.0)

    @transaction.atomic
    def _cluster(self, kubeconfig: str, endpoints: dict[str, Any], *, region: str) -> Cluster:
        speed = float(endpoints.get("speed") or 1.0)
        notes = "The local KAITO simulator (kaitosim), registered by manage.py demo_setup."
        existing = Cluster.objects.filter(name=CLUSTER_NAME).first()
        try:
            if existing is None:
                return cluster_create(
                    name=CLUSTER_NAME,
                    kubeconfig=kubeconfig,
                    context=CLUSTER_NAME,
                    region=region,
                    notes=notes,
                    clock_speed=speed,
                )
            if existing.auth != Cluster.Auth.KUBECONFIG:
                raise CommandError(
                    f"a cluster named {CLUSTER_NAME} exists and uses the in-cluster account; "
                    "rename it first"
                )
            changed = existing.kubeconfig != kubeconfig
            return cluster_update(
                cluster=existing,
                default_namespace=existing.default_namespace,
                region=existing.region or region,
                notes=existing.notes or notes,
                clock_speed=speed,
                kubeconfig=kubeconfig if changed else "",
                context=CLUSTER_NAME,
            )
        except ClusterRefused as error:
            raise CommandError(str(error)) from None

    def _foundry_target(self, model: str, url: str, key: str, region: str) -> Target:
        name = f"foundry-{model.lower()}"
        target = Target.objects.filter(name=name).first() or Target(
            name=name,
            kind=Target.Kind.FOUNDRY_OPENAI,
            model_name=model,
            deployment_type=Target.DeploymentType.GLOBAL,
            region=region,
        )
        target.endpoint_url = url.rstrip("/") + "/openai/v1/"
        target.auth = Target.Auth.API_KEY
        target.api_key = key
        try:
            with transaction.atomic():
                return target_save(target=target)
        except ValidationError as error:
            raise CommandError(f"target {name}: {'; '.join(error.messages)}") from None
