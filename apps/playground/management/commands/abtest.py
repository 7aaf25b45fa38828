"""Run an experiment from a pipeline and print its summary table.

    manage.py abtest --targets kaito-phi-4,foundry-phi-4 --prompts prompts.jsonl --concurrency 8 \
        [--repetitions 3] [--max-tokens 256] [--storage text|hashes|nothing] [--output r.json] \
        [--wait]

Synchronous by default (this process measures every target at once); ``--wait`` queues it for
the Celery workers instead and waits. ``--prompts`` also takes a built-in set's name.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.playground.experiment_stats import (
    experiment_sample_rows,
    experiment_settings,
    experiment_summary,
)
from apps.playground.experiments import experiment_create, experiment_run_sync
from apps.playground.models import Experiment, Target
from apps.playground.prompts import PromptSetError, load_path


class Command(BaseCommand):
    help = "Run an A/B experiment over a prompt set and print the per-target summary."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--targets", required=True, help="Target names, comma-separated.")
        parser.add_argument(
            "--prompts", required=True, help="A .jsonl/.csv file or a built-in set."
        )
        parser.add_argument("--concurrency", type=int, default=4)
        parser.add_argument("--repetitions", type=int, default=1)
        parser.add_argument("--max-tokens", type=int, default=256)
        parser.add_argument("--timeout", type=float, default=60.0)
        parser.add_argument("--storage", choices=Experiment.StoragePolicy.values, default="text")
        parser.add_argument("--name", default="")
        parser.add_argument("--output", type=Path, help="Write the summary and samples as JSON.")
        parser.add_argument("--wait", action="store_true", help="Run on Celery and wait.")

    def handle(self, *args: Any, **options: Any) -> None:
        names = [n.strip() for n in options["targets"].split(",") if n.strip()]
        targets = []
        for name in names:
            target = Target.objects.filter(name=name, archived_at__isnull=True).first()
            if target is None:
                raise CommandError(f"No target is called {name!r}.")
            targets.append(target)
        try:
            prompt_set = load_path(Path(options["prompts"]))
        except (PromptSetError, OSError) as exc:
            raise CommandError(f"{options['prompts']}: {exc}") from None
        try:
            experiment = experiment_create(
                user=None,
                name=options["name"] or f"abtest {prompt_set.name}",
                targets=targets,
                prompt_set=prompt_set,
                repetitions=options["repetitions"],
                concurrency=options["concurrency"],
                max_tokens=options["max_tokens"],
                timeout_s=options["timeout"],
                storage_policy=options["storage"],
                enqueue=options["wait"],
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if options["wait"]:
            while not experiment.finished:
                time.sleep(1)
                experiment.refresh_from_db()
        else:
            experiment = experiment_run_sync(experiment=experiment)
        summaries = experiment_summary(experiment)
        self.stdout.write(f"Experiment {experiment.pk}: {experiment.status}")
        header = (
            f"{'target':<28} {'ok/n':>9} {'err%':>5} {'TTFT p50':>9} {'p95':>8} {'p99':>8} "
            f"{'ITL p50':>8} {'E2E p50':>9} {'p95':>8} {'tok/s':>8} {'req/s':>7} {'$/1M':>9}"
        )
        self.stdout.write(header)

        def num(value: Any, places: int = 1) -> str:
            return "-" if value is None else f"{float(value):.{places}f}"

        for s in summaries:
            p = s.percentiles
            self.stdout.write(
                f"{s.name[:28]:<28} {f'{s.ok}/{s.requests}':>9} "
                f"{num(None if s.error_rate is None else s.error_rate * 100, 0):>5} "
                f"{num(p['ttft_ms'].get(50)):>9} {num(p['ttft_ms'].get(95)):>8} "
                f"{num(p['ttft_ms'].get(99)):>8} {num(p['itl_mean_ms'].get(50)):>8} "
                f"{num(p['e2e_ms'].get(50)):>9} {num(p['e2e_ms'].get(95)):>8} "
                f"{num(s.output_tokens_per_s):>8} {num(s.requests_per_s, 2):>7} "
                f"{num(s.cost_per_1m, 4):>9}"
            )
        if options["output"]:
            result = {
                "experiment": experiment_settings(experiment),
                "summary": [s.as_json() for s in summaries],
                "samples": list(experiment_sample_rows(experiment)),
            }
            options["output"].write_text(json.dumps(result, indent=2))
            self.stdout.write(f"Wrote {options['output']}")
