"""The simulated Microsoft Foundry endpoint, driven by openai, azure-ai-inference and httpx."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar, cast

import httpx
import openai
import pytest
from azure.ai.inference import ChatCompletionsClient
from azure.ai.inference.models import (
    ChatRequestMessage,
    StreamingChatCompletionsUpdate,
    UserMessage,
)
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import HttpResponseError
from openai.types.chat import ChatCompletionMessageParam

from kaitosim import latency
from kaitosim.foundry import FoundryServer, start_foundry_server
from tests.kaitosim.loop_thread import LoopThread

T = TypeVar("T")
KEY = "test-key"
API = "2024-05-01-preview"


def start(loop_thread: LoopThread, **options: Any) -> FoundryServer:
    settings: dict[str, Any] = {"api_keys": [KEY], "speed": 50.0, "jitter": False}
    settings.update(options)
    return loop_thread.run(start_foundry_server(**settings))


@pytest.fixture(scope="module")
def foundry(loop_thread: LoopThread) -> Iterator[FoundryServer]:
    server = start(loop_thread, default_deployment="Phi-4")
    yield server
    loop_thread.run(server.stop())


@pytest.fixture
def oai(foundry: FoundryServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{foundry.url}/openai/v1/", api_key=KEY, max_retries=0)


@pytest.fixture
def inference(foundry: FoundryServer) -> Iterator[ChatCompletionsClient]:
    client = ChatCompletionsClient(
        endpoint=f"{foundry.url}/models", credential=AzureKeyCredential(KEY), retry_total=0
    )
    yield client
    client.close()


def user(content: str) -> list[ChatRequestMessage]:
    return [UserMessage(content)]


def updates_of(stream: object) -> list[StreamingChatCompletionsUpdate]:
    return list(cast("Iterable[StreamingChatCompletionsUpdate]", stream))


def ask(content: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": content}]


def test_openai_sdk_chat_returns_text_usage_and_filter_results(oai: openai.OpenAI) -> None:
    result = oai.chat.completions.create(
        model="gpt-4.1-mini", messages=ask("Explain vLLM"), max_tokens=20
    )
    assert result.model == "gpt-4.1-mini-2025-04-14"
    assert result.choices[0].message.content
    assert result.usage is not None
    assert result.usage.completion_tokens == 20
    extra = result.model_extra or {}
    (prompt_filter,) = extra["prompt_filter_results"]
    assert prompt_filter["content_filter_results"]["jailbreak"] == {
        "filtered": False,
        "detected": False,
    }
    choice_extra = result.choices[0].model_extra or {}
    assert choice_extra["content_filter_results"]["violence"] == {
        "filtered": False,
        "severity": "safe",
    }


def test_openai_sdk_streaming_puts_usage_in_a_final_chunk(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(
        model="gpt-4.1-mini",
        messages=ask("Explain batching"),
        max_tokens=10,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    first, last = chunks[0], chunks[-1]
    assert first.choices == []
    assert (first.model_extra or {})["prompt_filter_results"]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens == 10
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text) > 10


def test_openai_sdk_lists_the_catalog_deployments(oai: openai.OpenAI) -> None:
    names = {model.id for model in oai.models.list()}
    assert {"gpt-4.1-mini", "Phi-4", "Llama-3.3-70B-Instruct"} <= names
    assert "gpt-4o" not in names  # retired


def test_azure_ai_inference_completes_and_streams_with_usage(
    inference: ChatCompletionsClient,
) -> None:
    result = inference.complete(model="Phi-4", messages=user("Explain GPUs"), max_tokens=12)
    assert result.choices[0].message.content
    assert result.usage.completion_tokens == 12
    updates = updates_of(
        inference.complete(model="Phi-4", messages=user("Explain GPUs"), max_tokens=12, stream=True)
    )
    text = "".join(u.choices[0].delta.content or "" for u in updates if u.choices)
    assert text
    assert updates[-1].choices == []
    usage = updates[-1].usage
    assert usage is not None
    assert usage.completion_tokens == 12


def test_azure_ai_inference_streams_openai_models_usage_when_asked(
    inference: ChatCompletionsClient,
) -> None:
    updates = updates_of(
        inference.complete(
            model="gpt-4.1-mini",
            messages=user("hi there, explain"),
            max_tokens=6,
            stream=True,
            model_extras={"stream_options": {"include_usage": True}},
        )
    )
    usage = updates[-1].usage
    assert usage is not None
    assert usage.completion_tokens == 6


def test_azure_ai_inference_reads_model_info(foundry: FoundryServer) -> None:
    with ChatCompletionsClient(
        endpoint=f"{foundry.url}/models", credential=AzureKeyCredential(KEY)
    ) as client:
        info = client.get_model_info()
    assert info.model_name == "Phi-4"
    assert info.model_provider_name == "Microsoft"
    headers = {"x-ms-model-mesh-model-name": "Llama-3.3-70B-Instruct", "api-key": KEY}
    body = httpx.get(
        f"{foundry.url}/models/info", params={"api-version": API}, headers=headers
    ).json()
    assert body == {
        "model_name": "Llama-3.3-70B-Instruct",
        "model_provider_name": "Meta",
        "model_type": "chat-completion",
    }


def test_the_model_inference_api_needs_a_supported_api_version(foundry: FoundryServer) -> None:
    body = {"model": "Phi-4", "messages": ask("hi")}
    missing = httpx.post(
        f"{foundry.url}/models/chat/completions", json=body, headers={"api-key": KEY}
    )
    assert missing.status_code == 400
    assert missing.json()["error"]["code"] == "MissingApiVersionParameter"
    wrong = httpx.post(
        f"{foundry.url}/models/chat/completions",
        json=body,
        headers={"api-key": KEY},
        params={"api-version": "1999-01-01"},
    )
    assert wrong.status_code == 400
    assert wrong.json() == {"error": {"code": "BadRequest", "message": "API version not supported"}}


def test_requests_without_a_valid_key_get_azures_401(foundry: FoundryServer) -> None:
    body = {"model": "Phi-4", "messages": ask("hi")}
    url = f"{foundry.url}/openai/v1/chat/completions"
    for headers in ({}, {"api-key": "wrong"}, {"Authorization": "Bearer wrong"}):
        response = httpx.post(url, json=body, headers=headers)
        assert response.status_code == 401
        error = response.json()["error"]
        assert error["code"] == "401"
        assert error["message"].startswith("Access denied due to invalid subscription key")
    ok = httpx.post(url, json={**body, "max_tokens": 2}, headers={"Authorization": f"Bearer {KEY}"})
    assert ok.status_code == 200


def test_an_unknown_deployment_is_deployment_not_found(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        oai.chat.completions.create(model="gpt-9", messages=ask("hi"))
    assert caught.value.code == "DeploymentNotFound"


def test_retired_models_are_served_only_when_asked(
    loop_thread: LoopThread, oai: openai.OpenAI
) -> None:
    with pytest.raises(openai.NotFoundError):
        oai.chat.completions.create(model="gpt-4o", messages=ask("hi"))
    server = start(loop_thread, serve_retired=True)
    try:
        client = openai.OpenAI(base_url=f"{server.url}/openai/v1/", api_key=KEY, max_retries=0)
        result = client.chat.completions.create(model="gpt-4o", messages=ask("hi"), max_tokens=3)
        assert result.model == "gpt-4o-2024-11-20"
    finally:
        loop_thread.run(server.stop())


def test_a_trigger_phrase_gets_the_content_filter_error(foundry: FoundryServer) -> None:
    response = httpx.post(
        f"{foundry.url}/openai/v1/chat/completions",
        headers={"api-key": KEY},
        json={"model": "gpt-4.1-mini", "messages": ask("kaitosim:violence now")},
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "content_filter"
    assert error["innererror"]["code"] == "ResponsibleAIPolicyViolation"
    result = error["innererror"]["content_filter_result"]
    assert result["violence"] == {"filtered": True, "severity": "high"}
    assert result["hate"] == {"filtered": False, "severity": "safe"}


def test_an_output_trigger_cuts_the_answer_with_content_filter(oai: openai.OpenAI) -> None:
    result = oai.chat.completions.create(
        model="gpt-4.1-mini", messages=ask("Explain kaitosim:filter-output in detail")
    )
    choice = result.choices[0]
    assert choice.finish_reason == "content_filter"
    assert (choice.model_extra or {})["content_filter_results"]["violence"]["filtered"] is True


def test_reasoning_models_reject_max_tokens(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="Use 'max_completion_tokens' instead"):
        oai.chat.completions.create(model="gpt-5.1", messages=ask("hi"), max_tokens=10)
    result = oai.chat.completions.create(
        model="gpt-5.1",
        messages=ask("Explain queues"),
        max_completion_tokens=10,
        reasoning_effort="low",
    )
    assert result.usage is not None
    details = result.usage.completion_tokens_details
    assert details is not None
    assert details.reasoning_tokens
    assert result.usage.completion_tokens == 10 + details.reasoning_tokens


def test_past_the_token_limit_requests_get_429_with_retry_after(loop_thread: LoopThread) -> None:
    server = start(loop_thread, speed=100.0, tpm_limit=200, rpm_limit=600)
    url = f"{server.url}/openai/v1/chat/completions"
    body = {"model": "gpt-4.1-mini", "messages": ask("hi"), "max_tokens": 90}
    try:
        first = httpx.post(url, json=body, headers={"api-key": KEY})
        second = httpx.post(url, json=body, headers={"api-key": KEY})
        third = httpx.post(url, json=body, headers={"api-key": KEY})
        assert first.status_code == second.status_code == 200
        assert int(first.headers["x-ratelimit-remaining-tokens"]) > int(
            second.headers["x-ratelimit-remaining-tokens"]
        )
        assert third.status_code == 429
        assert third.json()["error"]["code"] == "429"
        assert "exceeded token rate limit" in third.json()["error"]["message"]
        retry_ms = int(third.headers["retry-after-ms"])
        assert int(third.headers["Retry-After"]) >= 1
        assert retry_ms <= 61_000 / 100
        time.sleep(retry_ms / 1000 + 0.05)
        assert httpx.post(url, json=body, headers={"api-key": KEY}).status_code == 200
    finally:
        loop_thread.run(server.stop())


def test_the_openai_sdk_retries_a_429_after_the_advertised_delay(loop_thread: LoopThread) -> None:
    server = start(loop_thread, speed=200.0, tpm_limit=100, rpm_limit=600)
    client = openai.OpenAI(base_url=f"{server.url}/openai/v1/", api_key=KEY, max_retries=3)
    try:
        for _ in range(3):
            client.chat.completions.create(model="Phi-4", messages=ask("hi"), max_tokens=40)
        statuses = [record.status for record in server.records]
    finally:
        loop_thread.run(server.stop())
    assert statuses.count(200) == 3
    assert 429 in statuses


def test_a_cut_stream_breaks_mid_answer(loop_thread: LoopThread) -> None:
    server = start(loop_thread, stream_cut_after_tokens=4)
    server.set_fault("stream_cut")
    try:
        with httpx.stream(
            "POST",
            f"{server.url}/openai/v1/chat/completions",
            headers={"api-key": KEY},
            json={"model": "Phi-4", "messages": ask("Explain in detail"), "stream": True},
        ) as response:
            lines: list[str] = []
            with pytest.raises(httpx.RemoteProtocolError):
                lines.extend(line for line in response.iter_lines() if line)
            assert lines
            assert "data: [DONE]" not in lines
    finally:
        loop_thread.run(server.stop())


def test_service_errors_are_500_and_503_with_retry_after(loop_thread: LoopThread) -> None:
    server = start(loop_thread)
    url = f"{server.url}/openai/v1/chat/completions"
    body = {"model": "Phi-4", "messages": ask("hi")}
    try:
        server.set_fault("error")
        assert httpx.post(url, json=body, headers={"api-key": KEY}).status_code == 500
        server.set_fault("unavailable")
        unavailable = httpx.post(url, json=body, headers={"api-key": KEY})
        assert unavailable.status_code == 503
        assert unavailable.headers["Retry-After"] == "1"
    finally:
        loop_thread.run(server.stop())


def first_token(server: FoundryServer, deployment: str) -> float:
    client = openai.OpenAI(base_url=f"{server.url}/openai/v1/", api_key=KEY, max_retries=0)
    began = time.perf_counter()
    for chunk in client.chat.completions.create(
        model=deployment, messages=ask("hi, explain"), max_tokens=3, stream=True
    ):
        if chunk.choices and chunk.choices[0].delta.content:
            return time.perf_counter() - began
    raise AssertionError("no token")


def test_time_to_first_token_follows_the_region_profile(loop_thread: LoopThread) -> None:
    near = start(loop_thread, speed=2.0, region="eastus")
    far = start(loop_thread, speed=2.0, region="westeurope")
    try:
        east, europe = first_token(near, "gpt-4.1-mini"), first_token(far, "gpt-4.1-mini")
    finally:
        loop_thread.run(near.stop())
        loop_thread.run(far.stop())
    planned_east = latency.foundry_ttft_seconds("gpt-4.1-mini", "eastus", prompt_tokens=8)
    expected_gap = latency.region_rtt_seconds("westeurope") - latency.region_rtt_seconds("eastus")
    east_record, europe_record = near.records[-1], far.records[-1]
    # the plan follows the region profile exactly (jitter is off) ...
    assert east_record.ttft_s == pytest.approx(planned_east)
    assert europe_record.ttft_s - east_record.ttft_s == pytest.approx(expected_gap)
    # ... and the first token is not written, nor seen by the client, before the plan says
    for record, seen in ((east_record, east), (europe_record, europe)):
        assert record.first_token_written_at is not None
        assert record.first_token_written_at - record.received_at >= record.ttft_s / 2
        assert seen >= record.ttft_s / 2


def test_usage_totals_price_tokens_from_the_catalog(loop_thread: LoopThread) -> None:
    server = start(loop_thread)
    client = openai.OpenAI(base_url=f"{server.url}/openai/v1/", api_key=KEY, max_retries=0)
    try:
        result = client.chat.completions.create(
            model="Phi-4-mini-instruct", messages=ask("Explain GPUs"), max_tokens=30
        )
        totals = server.usage_totals()["Phi-4-mini-instruct"]
    finally:
        loop_thread.run(server.stop())
    assert result.usage is not None
    assert totals["prompt_tokens"] == result.usage.prompt_tokens
    expected = (result.usage.prompt_tokens * 0.075 + 30 * 0.30) / 1e6
    assert totals["cost_usd"] == pytest.approx(expected)


def test_the_classic_azure_openai_route_needs_an_api_version(foundry: FoundryServer) -> None:
    client = openai.AzureOpenAI(
        azure_endpoint=foundry.url, api_key=KEY, api_version="2024-10-21", max_retries=0
    )
    result = client.chat.completions.create(
        model="gpt-4.1-mini", messages=ask("hi, explain"), max_tokens=4
    )
    assert result.usage is not None
    assert result.usage.completion_tokens == 4


def test_azure_ai_inference_surfaces_unknown_models(inference: ChatCompletionsClient) -> None:
    with pytest.raises(HttpResponseError) as caught:
        inference.complete(model="nope", messages=user("hi"))
    assert caught.value.status_code == 404
    assert "Unknown model: nope" in str(caught.value)
