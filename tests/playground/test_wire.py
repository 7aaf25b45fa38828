"""Each kind's request is the one its SDK sends: the real openai and azure-ai-inference clients and
the harness post to the same recording server over HTTP, and the two requests are compared."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import openai
import pytest
from aiohttp import web
from azure.ai.inference import ChatCompletionsClient
from azure.ai.inference.models import SystemMessage, UserMessage
from azure.core.credentials import AzureKeyCredential

from apps.playground import clients
from tests.kaitosim.loop_thread import LoopThread

KEY = "wire-key"
CHAT = clients.ChatRequest(
    prompt="What is KAITO?",
    system_prompt="Answer in one line.",
    max_tokens=7,
    temperature=0.5,
    top_p=0.9,
    seed=42,
)
STREAM = (
    b'data: {"id":"1","object":"chat.completion.chunk","created":1,"model":"m","choices":'
    b'[{"index":0,"delta":{"role":"assistant","content":"Hi"},"finish_reason":null}]}\n\n'
    b'data: {"id":"1","object":"chat.completion.chunk","created":1,"model":"m","choices":'
    b'[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    b'data: {"id":"1","object":"chat.completion.chunk","created":1,"model":"m","choices":[],'
    b'"usage":{"prompt_tokens":12,"completion_tokens":1,"total_tokens":13}}\n\n'
    b"data: [DONE]\n\n"
)


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: Any


class Recorder:
    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        self.requests.append(
            Recorded(
                method=request.method,
                path=request.path,
                query=dict(request.query),
                headers={k.lower(): v for k, v in request.headers.items()},
                body=json.loads(raw or b"null"),
            )
        )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(STREAM)
        await response.write_eof()
        return response

    def last(self) -> Recorded:
        return self.requests[-1]


@pytest.fixture(scope="module")
def recorder() -> Iterator[Recorder]:
    thread = LoopThread()
    rec = Recorder()
    thread.run(rec.start())
    yield rec
    thread.run(rec.stop())
    thread.close()


def harness(recorder: Recorder, endpoint: clients.Endpoint) -> tuple[Recorded, clients.Measurement]:
    m = clients.measure_sync(endpoint, CHAT, timeout_s=10)
    return recorder.last(), m


AUTH_HEADERS = ("authorization", "api-key", "extra-parameters", "content-type", "accept")


def same_request(ours: Recorded, theirs: Recorded) -> None:
    assert (ours.method, ours.path, ours.query) == (theirs.method, theirs.path, theirs.query)
    for name in AUTH_HEADERS:
        assert ours.headers.get(name) == theirs.headers.get(name), name
    assert ours.body == theirs.body


def test_foundry_openai_v1_is_sent_as_the_openai_sdk_sends_it(recorder: Recorder) -> None:
    sdk = openai.OpenAI(base_url=f"{recorder.url}/openai/v1/", api_key=KEY, max_retries=0)
    list(
        sdk.chat.completions.create(
            model="gpt-4.1-mini",
            messages=[
                {"role": "system", "content": CHAT.system_prompt},
                {"role": "user", "content": CHAT.prompt},
            ],
            max_completion_tokens=7,
            temperature=0.5,
            top_p=0.9,
            seed=42,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    theirs = recorder.last()
    # A user may paste the resource URL without /openai/v1: the harness adds it.
    for url in (f"{recorder.url}/openai/v1/", recorder.url):
        ours, m = harness(
            recorder,
            clients.Endpoint(
                kind=clients.FOUNDRY_OPENAI,
                url=url,
                model="gpt-4.1-mini",
                auth=clients.AUTH_API_KEY,
                api_key=KEY,
            ),
        )
        same_request(ours, theirs)
        assert ours.headers["authorization"] == f"Bearer {KEY}"
        assert "api-key" not in ours.headers
        assert ours.body["stream_options"] == {"include_usage": True}
        assert m.ok and m.text == "Hi" and (m.input_tokens, m.output_tokens) == (12, 1)


def test_the_model_inference_api_is_sent_as_azure_ai_inference_sends_it(
    recorder: Recorder,
) -> None:
    sdk = ChatCompletionsClient(
        endpoint=f"{recorder.url}/models", credential=AzureKeyCredential(KEY), retry_total=0
    )
    list(
        sdk.complete(
            model="Phi-4",
            messages=[SystemMessage(CHAT.system_prompt), UserMessage(CHAT.prompt)],
            max_tokens=7,
            temperature=0.5,
            top_p=0.9,
            seed=42,
            stream=True,
            model_extras={"stream_options": {"include_usage": True}},
        )
    )
    sdk.close()
    theirs = recorder.last()
    ours, m = harness(
        recorder,
        clients.Endpoint(
            kind=clients.FOUNDRY_INFERENCE,
            url=f"{recorder.url}/models",
            model="Phi-4",
            auth=clients.AUTH_API_KEY,
            api_key=KEY,
        ),
    )
    same_request(ours, theirs)
    assert ours.query == {"api-version": "2024-05-01-preview"}
    assert ours.headers["api-key"] == KEY
    assert ours.headers["authorization"] == f"Bearer {KEY}"
    assert ours.headers["extra-parameters"] == "pass-through"
    assert m.ok


@pytest.mark.parametrize(
    ("kind", "url_suffix", "sdk_base"),
    [
        (clients.KAITO_VLLM, "", "/v1"),  # a KAITO service URL: the harness adds /v1
        (clients.KAITO_VLLM, "/v1", "/v1"),
        (clients.OPENAI_COMPATIBLE, "/v1", "/v1"),  # the base URL, as the openai SDK takes it
    ],
)
def test_vllm_and_openai_compatible_endpoints_get_the_openai_sdks_request(
    recorder: Recorder, kind: str, url_suffix: str, sdk_base: str
) -> None:
    sdk = openai.OpenAI(base_url=f"{recorder.url}{sdk_base}", api_key=KEY, max_retries=0)
    list(
        sdk.chat.completions.create(
            model="phi-4-mini-instruct",
            messages=[
                {"role": "system", "content": CHAT.system_prompt},
                {"role": "user", "content": CHAT.prompt},
            ],
            max_tokens=7,
            temperature=0.5,
            top_p=0.9,
            seed=42,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    theirs = recorder.last()
    ours, _ = harness(
        recorder,
        clients.Endpoint(
            kind=kind,
            url=f"{recorder.url}{url_suffix}",
            model="phi-4-mini-instruct",
            auth=clients.AUTH_API_KEY,
            api_key=KEY,
        ),
    )
    same_request(ours, theirs)
    assert ours.path == "/v1/chat/completions"


def test_an_endpoint_without_auth_sends_no_credentials(recorder: Recorder) -> None:
    ours, _ = harness(
        recorder, clients.Endpoint(kind=clients.KAITO_VLLM, url=recorder.url, model="m")
    )
    assert "authorization" not in ours.headers and "api-key" not in ours.headers


def test_transformers_chat_posts_a_prompt_and_generate_kwargs(recorder: Recorder) -> None:
    ours, _ = harness(
        recorder, clients.Endpoint(kind=clients.KAITO_TRANSFORMERS_CHAT, url=recorder.url)
    )
    assert ours.path == "/chat"
    assert ours.body == {
        "prompt": "Answer in one line.\n\nWhat is KAITO?",
        "return_full_text": False,
        "generate_kwargs": {
            "max_new_tokens": 7,
            "do_sample": True,
            "temperature": 0.5,
            "top_p": 0.9,
        },
    }


def test_a_key_target_without_a_key_fails_before_sending(recorder: Recorder) -> None:
    before = len(recorder.requests)
    m = clients.measure_sync(
        clients.Endpoint(
            kind=clients.FOUNDRY_OPENAI, url=recorder.url, model="x", auth=clients.AUTH_API_KEY
        ),
        CHAT,
    )
    assert m.error_kind == "config" and "no" in m.error_message.lower()
    assert len(recorder.requests) == before
    assert "secret-value" not in repr(clients.Endpoint(kind="x", url="u", api_key="secret-value"))
