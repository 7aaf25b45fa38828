"""Fixtures for the playground: kaitosim's Foundry and inference servers over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from apps.playground import clients
from kaitosim.foundry import FoundryServer, start_foundry_server
from kaitosim.inference import InferenceServer, InferenceSpec, start_inference_server
from tests.kaitosim.loop_thread import LoopThread

FOUNDRY_KEY = "playground-test-key"
VLLM_MODEL = "phi-4-mini-instruct"


@pytest.fixture(scope="module")
def loop_thread() -> Iterator[LoopThread]:
    """A background event loop where this module's simulated servers run."""
    thread = LoopThread()
    yield thread
    thread.close()


def foundry_start(loop_thread: LoopThread, **options: Any) -> FoundryServer:
    settings: dict[str, Any] = {"api_keys": [FOUNDRY_KEY], "speed": 20.0, "jitter": False}
    settings.update(options)
    return loop_thread.run(start_foundry_server(**settings))


def inference_start(loop_thread: LoopThread, **options: Any) -> InferenceServer:
    spec = InferenceSpec(**{"served_model": VLLM_MODEL, "speed": 20.0, **options})
    return loop_thread.run(start_inference_server(spec))


@pytest.fixture(scope="module")
def foundry(loop_thread: LoopThread) -> Iterator[FoundryServer]:
    server = foundry_start(loop_thread)
    yield server
    loop_thread.run(server.stop())


@pytest.fixture(scope="module")
def vllm(loop_thread: LoopThread) -> Iterator[InferenceServer]:
    server = inference_start(loop_thread)
    yield server
    loop_thread.run(server.stop())


@pytest.fixture(scope="module")
def transformers(loop_thread: LoopThread) -> Iterator[InferenceServer]:
    server = inference_start(loop_thread, runtime="transformers")
    yield server
    loop_thread.run(server.stop())


def foundry_endpoint(
    server: FoundryServer,
    *,
    kind: str = clients.FOUNDRY_OPENAI,
    deployment: str = "Phi-4",
    key: str = FOUNDRY_KEY,
) -> clients.Endpoint:
    """A Foundry target as a user would enter it: the resource URL for the OpenAI v1 API, the
    /models endpoint for the Model Inference API."""
    url = f"{server.url}/openai/v1/" if kind == clients.FOUNDRY_OPENAI else f"{server.url}/models"
    return clients.Endpoint(
        kind=kind, url=url, model=deployment, auth=clients.AUTH_API_KEY, api_key=key
    )


def vllm_endpoint(server: InferenceServer) -> clients.Endpoint:
    return clients.Endpoint(kind=clients.KAITO_VLLM, url=server.url, model=VLLM_MODEL)


def transformers_endpoint(server: InferenceServer) -> clients.Endpoint:
    return clients.Endpoint(kind=clients.KAITO_TRANSFORMERS_CHAT, url=server.url)
