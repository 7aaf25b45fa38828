"""Take the README's screenshots of kaitoweb's main pages, on the simulator.

    .venv/bin/python docs/screenshots/capture.py [--out docs/screenshots] [--speed 20]

It starts what `python3 dev.py run` starts (kaitosim, a Celery worker with beat, the web
server) on the embedded defaults (SQLite and the filesystem broker) in a throwaway directory, so
it never touches var/ or a database of yours, then drives Debian's Chromium (/usr/bin/chromium)
through the journey a user takes: the catalog, a model's sizing, launching phi-4-mini on KAITO
and following it until it is ready, a prompt A/B tested against Foundry, and an experiment with
its charts. It writes 1280-pixel-wide PNGs and stops everything it started.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
WIDTH = 1280
HEIGHT = 800
PASSWORD = "screenshots-only-password"  # noqa: S105 (a throwaway login in a throwaway database)
PHI = "microsoft/Phi-4-mini-instruct"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.2)


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):  # noqa: S310 (our own loopback server)
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


@contextlib.contextmanager
def the_app(workdir: Path, speed: float) -> Iterator[tuple[str, dict[str, Any]]]:
    """kaitosim, a worker with beat and the web server, as `dev.py run` starts them."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(
        DJANGO_SETTINGS_MODULE="kaitoweb.settings",
        DEBUG="1",
        KAITOWEB_VAR_DIR=str(workdir),
        CELERY_QUEUE=f"kaitoweb-screenshots-{os.getpid()}",
        DEPLOYMENTS_FOLLOW_SECONDS="1",
    )
    manage = [PY, str(ROOT / "manage.py")]
    for args in (
        ["migrate", "--no-input", "-v", "0"],
        ["load_catalog"],
        ["create_admin", "--username", "admin", "--password", PASSWORD],
    ):
        subprocess.run([*manage, *args], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)

    state = workdir / "kaitosim"
    env["KAITOSIM_KUBECONFIG"] = str(state / "kubeconfig")
    port = free_port()
    commands = {
        "kaitosim": [PY, "-m", "kaitosim", "--state-dir", str(state), "--speed", str(speed)],
        "worker": [
            *(PY, "-m", "celery", "-A", "kaitoweb", "worker", "--beat", "--loglevel=WARNING"),
            *("--pool=threads", "--concurrency=8", "-Q", env["CELERY_QUEUE"]),
            *("--schedule", str(workdir / "celerybeat-schedule")),
        ],
        "web": [*manage, "runserver", f"127.0.0.1:{port}", "--noreload"],
    }
    children: list[subprocess.Popen[bytes]] = []
    try:
        for name, command in commands.items():
            log = (workdir / f"{name}.log").open("wb")
            children.append(
                subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
            )
            if name == "kaitosim":
                wait_until(lambda: (state / "endpoints.json").is_file(), "kaitosim", 60)
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: answers(f"{base}/accounts/login/"), "the web server", 60)
        yield base, json.loads((state / "endpoints.json").read_text())
    finally:
        for child in reversed(children):
            if child.poll() is None:
                child.send_signal(signal.SIGINT)
        for child in children:
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


class Camera:
    def __init__(self, page: Any, out: Path) -> None:
        self.page, self.out = page, out

    def __call__(self, name: str, *, height: int = HEIGHT, top: str | None = None) -> None:
        """The page from its top (or from the element `top`), `height` pixels of it."""
        y = 0.0
        if top is not None:
            box = self.page.locator(top).first.bounding_box()
            y = max(0.0, box["y"] + self.page.evaluate("window.scrollY") - 16) if box else 0.0
        total = self.page.evaluate("document.documentElement.scrollHeight")
        clip = {"x": 0, "y": y, "width": WIDTH, "height": min(height, max(1, total - y))}
        path = self.out / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True, clip=clip)
        print(f"  {path.relative_to(ROOT)}  {path.stat().st_size // 1024} KB", flush=True)


def journey(page: Any, base: str, endpoints: dict[str, Any], shot: Camera) -> None:
    from playwright.sync_api import expect

    page.goto(f"{base}/accounts/login/")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("#catalog-table")

    page.select_option("select[name=family]", "phi")
    expect(page.locator("#catalog-table tbody tr:not([data-name*='phi' i])")).to_have_count(
        0, timeout=30_000
    )
    page.select_option("select[name=family]", "")
    expect(page.locator("#catalog-table tbody tr:not([data-name*='phi' i])").first).to_be_visible(
        timeout=30_000
    )
    shot("catalog")

    page.click(f"a:has-text('{PHI}')")
    page.wait_for_selector("#sizing-table")
    model_url = page.url
    shot("model-detail", height=1500)

    page.goto(f"{base}/clusters/")
    page.click("#add-simulator")
    page.wait_for_selector("#check-ok")

    page.goto(model_url)
    page.click("#launch-on-kaito")
    expect(page.locator("input[name=name]")).to_have_value("phi-4-mini-instruct", timeout=30_000)
    page.click("#preview-button")
    page.wait_for_selector("#dry-run-ok")
    shot("launch-form", height=1200)
    page.click("#launch-button")
    page.wait_for_url(re.compile(r"/deployments/\d+/$"))
    page.wait_for_selector("#deployment-live[data-status=provisioning]", timeout=60_000)
    page.wait_for_selector("#deployment-state [data-condition=ResourceReady][data-value=True]")
    shot("deployment-provisioning", height=1200)
    page.wait_for_selector("#deployment-live[data-status=ready]", timeout=180_000)
    page.wait_for_selector("#timeline-chart .main-svg")
    shot("deployment-ready", height=1500)
    deployment_id = page.url.rstrip("/").rsplit("/", 1)[-1]

    page.goto(f"{base}/playground/targets/new/")
    page.fill("#id_name", "kaito-phi-4-mini")
    page.select_option("#id_deployment", deployment_id)
    page.click("button[value=prefill]")
    page.wait_for_selector("#id_kind option[value=kaito_vllm]:checked", state="attached")
    page.click("button[value=save]")
    page.wait_for_url("**/playground/targets/")
    page.goto(f"{base}/playground/targets/new/")
    page.fill("#id_name", "foundry-phi-4-mini")
    page.select_option("#id_kind", "foundry_openai")
    page.fill("#id_endpoint_url", f"{endpoints['foundryUrl']}/openai/v1/")
    page.fill("#id_model_name", "Phi-4-mini-instruct")
    page.select_option("#id_auth", "api_key")
    page.select_option("#id_deployment_type", "data_zone")
    page.fill("#id_region", "eastus")
    page.fill("#id_api_key", endpoints["foundryKey"])
    page.click("button[value=save]")
    page.wait_for_url("**/playground/targets/")
    shot("targets")

    page.goto(f"{base}/playground/")
    page.fill("#id_prompt", "Explain how KAITO provisions GPU nodes for a workspace.")
    page.fill("#id_max_tokens", "160")
    page.click("button:has-text('Run both')")
    page.wait_for_url("**/playground/runs/*/")
    page.wait_for_selector("#run-sides[data-run-status=done]", timeout=120_000)
    shot("playground", height=1400)

    page.goto(f"{base}/playground/experiments/")
    page.fill("#id_name", "phi-4-mini: KAITO or Foundry")
    for box in page.locator("input[name=targets]").all():
        box.check()
    page.select_option("#id_builtin", "platform-questions")
    page.fill("#id_repetitions", "4")
    page.fill("#id_concurrency", "2")
    page.fill("#id_max_tokens", "64")
    page.click("button:has-text('Start')")
    page.wait_for_url("**/playground/experiments/*/")
    page.wait_for_selector("#experiment-progress[data-status=done]", timeout=300_000)
    page.goto(page.url)  # the final figures
    page.wait_for_selector("#chart-figure-break_even .main-svg")
    shot("experiment-results", height=1500)
    shot("experiment-charts", height=1600, top="#chart-figure-scatter")


def main() -> None:
    parser = argparse.ArgumentParser(description="Take the README screenshots on the simulator.")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument(
        "--speed", type=float, default=20.0, help="kaitosim's --speed (dev.py run's default)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the throwaway directory")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="kaitoweb-screenshots-"))
    try:
        with the_app(workdir, args.speed) as (base, endpoints), sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path="/usr/bin/chromium",
                args=["--no-sandbox", "--disable-gpu", "--no-first-run"],
            )
            page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
            page.set_default_timeout(30_000)
            try:
                journey(page, base, endpoints, Camera(page, args.out))
            finally:
                browser.close()
    except BaseException:
        print(f"logs kept in {workdir}", file=sys.stderr)
        raise
    if args.keep:
        print(f"kept {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
