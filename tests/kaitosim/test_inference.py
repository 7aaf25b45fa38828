"""The simulated KAITO inference server, driven by the real openai SDK and httpx."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from typing import Any, TypeVar

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from kaitosim import latency
from kaitosim.inference import InferenceServer, InferenceSpec, start_inference_server
from tests.kaitosim.loop_thread import LoopThread

T = TypeVar("T")
MODEL = "phi-4-mini-instruct"


def start(loop_thread: LoopThread, **overrides: Any) -> InferenceServer:
    fields: dict[str, Any] = {
        "served_model": MODEL,
        "max_model_len": 8192,
        "max_concurrency": 16,
        "speed": 20.0,
    }
    fields.update(overrides)
    return loop_thread.run(start_inference_server(InferenceSpec(**fields)))


@pytest.fixture(scope="module")
def vllm(loop_thread: LoopThread) -> Iterator[InferenceServer]:
    server = start(loop_thread)
    yield server
    loop_thread.run(server.stop())


@pytest.fixture
def client(vllm: InferenceServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{vllm.url}/v1", api_key="unused", max_retries=0)


def ask(content: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": content}]


def test_health_answers_200_with_an_empty_body(vllm: InferenceServer) -> None:
    response = httpx.get(f"{vllm.url}/health")
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["x-kaitosim-engine"] == "synthetic"


def test_models_lists_the_preset_name_with_max_model_len(vllm: InferenceServer) -> None:
    body = httpx.get(f"{vllm.url}/v1/models").json()
    assert body["object"] == "list"
    (card,) = body["data"]
    assert card["id"] == MODEL
    assert card["max_model_len"] == 8192
    assert card["owned_by"] == "vllm"
    assert card["root"] == "microsoft/Phi-4-mini-instruct"


def test_chat_completion_returns_text_and_usage(client: openai.OpenAI) -> None:
    result = client.chat.completions.create(
        model=MODEL, messages=ask("Explain KV caching"), max_tokens=25
    )
    assert result.id.startswith("chatcmpl-")
    assert result.model == MODEL
    choice = result.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason == "length"
    assert result.usage is not None
    assert result.usage.completion_tokens == 25
    assert result.usage.prompt_tokens == 1 + 4 + len("Explain KV caching") // 4 + 1
    assert result.usage.total_tokens == result.usage.prompt_tokens + 25


def test_streaming_ends_with_a_usage_chunk_with_empty_choices(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL,
        messages=ask("Explain batching"),
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finals] == ["length"]
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens == 12


def test_streaming_without_stream_options_sends_no_usage(vllm: InferenceServer) -> None:
    with httpx.stream(
        "POST",
        f"{vllm.url}/v1/chat/completions",
        json={"messages": ask("hi there friend"), "max_tokens": 5, "stream": True},
    ) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert all(line.startswith("data: ") for line in lines)
    assert not any('"usage"' in line for line in lines)


def test_max_completion_tokens_wins_over_max_tokens(client: openai.OpenAI) -> None:
    result = client.chat.completions.create(
        model=MODEL, messages=ask("Explain GPUs in detail"), max_tokens=50, max_completion_tokens=7
    )
    assert result.usage is not None
    assert result.usage.completion_tokens == 7


def test_a_natural_end_is_a_stop_and_counts_the_eos_token(client: openai.OpenAI) -> None:
    result = client.chat.completions.create(
        model=MODEL, messages=ask("Say exactly: ok"), temperature=0
    )
    assert result.choices[0].message.content == "ok"
    assert result.choices[0].finish_reason == "stop"
    assert result.usage is not None
    assert result.usage.completion_tokens == 2


def test_the_same_seed_and_prompt_give_the_same_text(client: openai.OpenAI) -> None:
    def run(seed: int) -> str:
        result = client.chat.completions.create(
            model=MODEL, messages=ask("Why use KAITO?"), max_tokens=40, temperature=0.9, seed=seed
        )
        return result.choices[0].message.content or ""

    assert run(11) == run(11)
    assert run(11) != run(12)


def test_stop_strings_cut_the_text_and_are_reported(client: openai.OpenAI) -> None:
    full = client.chat.completions.create(
        model=MODEL, messages=ask("Explain GPU memory"), max_tokens=60, temperature=0
    )
    text = full.choices[0].message.content or ""
    stop = text.split()[3]
    cut = client.chat.completions.create(
        model=MODEL, messages=ask("Explain GPU memory"), max_tokens=60, temperature=0, stop=[stop]
    )
    assert cut.choices[0].message.content == text[: text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].model_extra is not None
    assert cut.choices[0].model_extra["stop_reason"] == stop


def test_completions_default_to_sixteen_tokens(client: openai.OpenAI) -> None:
    result = client.completions.create(model=MODEL, prompt="The cluster scaled out because")
    assert result.object == "text_completion"
    assert result.usage is not None
    assert result.usage.completion_tokens == 16
    assert result.choices[0].text.startswith(" ")


def test_streamed_completions_carry_text_and_usage(client: openai.OpenAI) -> None:
    stream = client.completions.create(
        model=MODEL,
        prompt="Latency matters",
        max_tokens=6,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices)
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 6


def test_an_unknown_model_is_a_404_in_vllm_error_shape(vllm: InferenceServer) -> None:
    response = httpx.post(
        f"{vllm.url}/v1/chat/completions", json={"model": "llama-9000", "messages": ask("hi")}
    )
    assert response.status_code == 404
    assert response.json() == {
        "error": {
            "message": "The model `llama-9000` does not exist.",
            "type": "NotFoundError",
            "param": "model",
            "code": 404,
        }
    }


def test_a_prompt_longer_than_max_model_len_is_a_bad_request(vllm: InferenceServer) -> None:
    response = httpx.post(
        f"{vllm.url}/v1/chat/completions", json={"model": MODEL, "messages": ask("word " * 8000)}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "BadRequestError"
    assert error["code"] == 400
    assert error["message"].startswith("This model's maximum context length is 8192 tokens.")


def test_max_tokens_beyond_the_context_is_a_bad_request(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="'max_tokens' or 'max_completion_tokens' is"):
        client.chat.completions.create(model=MODEL, messages=ask("hi"), max_tokens=9000)


def test_invalid_sampling_parameters_are_rejected(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="temperature must be non-negative"):
        client.chat.completions.create(model=MODEL, messages=ask("hi"), temperature=-1)
    with pytest.raises(openai.BadRequestError, match=r"top_p must be in \(0, 1\]"):
        client.chat.completions.create(model=MODEL, messages=ask("hi"), top_p=1.5)


def test_missing_messages_is_a_validation_error(vllm: InferenceServer) -> None:
    response = httpx.post(f"{vllm.url}/v1/chat/completions", json={"model": MODEL})
    assert response.status_code == 400
    assert "'missing'" in response.json()["error"]["message"]


def test_vllm_before_0_10_1_uses_the_flat_error_object(loop_thread: LoopThread) -> None:
    server = start(loop_thread, vllm_version="0.9.2")
    try:
        response = httpx.post(
            f"{server.url}/v1/chat/completions", json={"model": "nope", "messages": ask("hi")}
        )
        assert response.json() == {
            "object": "error",
            "message": "The model `nope` does not exist.",
            "type": "NotFoundError",
            "param": "model",
            "code": 404,
        }
    finally:
        loop_thread.run(server.stop())


def metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
            if all(found.get(k) == v for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} {labels} not in /metrics")


def test_metrics_count_tokens_and_time_to_first_token_with_vllm_names(
    loop_thread: LoopThread,
) -> None:
    server = start(loop_thread)
    try:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)
        client.chat.completions.create(model=MODEL, messages=ask("Explain queues"), max_tokens=9)
        text = httpx.get(f"{server.url}/metrics").text
    finally:
        loop_thread.run(server.stop())
    assert "# TYPE vllm:time_to_first_token_seconds histogram" in text
    assert metric(text, "vllm:generation_tokens_total", model_name=MODEL, engine="0") == 9
    assert metric(text, "vllm:prompt_tokens_total") == 1 + 4 + 4 + 0
    assert metric(text, "vllm:request_success_total", finished_reason="length") == 1
    assert metric(text, "vllm:time_to_first_token_seconds_count") == 1
    assert metric(text, "vllm:num_requests_running") == 0
    assert metric(text, "vllm:time_to_first_token_seconds_bucket", le="+Inf") == 1
    assert metric(text, "kaito_max_concurrent_requests") == 16
    blocks = re.search(r'vllm:cache_config_info\{[^}]*num_gpu_blocks="(\d+)"', text)
    assert blocks is not None
    assert int(blocks.group(1)) > 1000


def test_requests_beyond_running_slots_and_queue_get_429_with_retry_after(
    loop_thread: LoopThread,
) -> None:
    server = start(loop_thread, max_concurrency=1, max_queue=1, speed=1.0)

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as http:
            body = {"messages": ask("Explain scheduling"), "max_tokens": 60}
            first = asyncio.ensure_future(http.post(f"{server.url}/v1/chat/completions", json=body))
            await asyncio.sleep(0.08)
            second = asyncio.ensure_future(
                http.post(f"{server.url}/v1/chat/completions", json=body)
            )
            await asyncio.sleep(0.08)
            third = await http.post(f"{server.url}/v1/chat/completions", json=body)
            return [await first, await second, third]

    try:
        first, second, third = loop_thread.run(burst())
    finally:
        loop_thread.run(server.stop())
    assert first.status_code == second.status_code == 200
    assert third.status_code == 429
    assert int(third.headers["Retry-After"]) >= 1
    assert third.json()["error"]["code"] == 429


def first_token_seconds(server: InferenceServer, prompt: str, max_tokens: int = 4) -> float:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)
    start_at = time.perf_counter()
    stream = client.chat.completions.create(
        model=MODEL, messages=ask(prompt), max_tokens=max_tokens, stream=True
    )
    ttft = 0.0
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content and not ttft:
            ttft = time.perf_counter() - start_at
    return ttft


def test_measured_time_to_first_token_matches_the_latency_model(loop_thread: LoopThread) -> None:
    server = start(loop_thread, speed=1.0, max_model_len=16384)
    prompt = "Summarise this report. " + "The GPU fleet ran hot all week. " * 100
    try:
        first_token_seconds(server, "warm up")
        measured = min(first_token_seconds(server, prompt) for _ in range(3))
    finally:
        loop_thread.run(server.stop())
    prompt_tokens = 1 + 4 + len(prompt) // 4 + 1
    expected = latency.ttft_seconds(server.model, server.hardware, prompt_tokens=prompt_tokens)
    assert 0.06 < expected < 0.15  # phi-4-mini on one A100: the brief's 60-120 ms
    assert expected * 0.9 <= measured <= expected + 0.05


def test_decode_speed_matches_the_latency_model_at_a_given_speed(loop_thread: LoopThread) -> None:
    server = start(loop_thread, speed=4.0)
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)
    try:
        stamps: list[float] = []
        stream = client.chat.completions.create(
            model=MODEL, messages=ask("Explain in detail"), max_tokens=120, stream=True
        )
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                stamps.append(time.perf_counter())
    finally:
        loop_thread.run(server.stop())
    itl = latency.decode_itl_seconds(server.model, server.hardware, context_tokens_per_seq=100)
    expected = (len(stamps) - 1) * itl / 4.0
    measured = stamps[-1] - stamps[0]
    assert len(stamps) >= 100
    assert expected * 0.85 <= measured <= expected * 1.25 + 0.03


def test_concurrent_streams_share_the_gpu_through_batching(loop_thread: LoopThread) -> None:
    # The latency model: a stream decodes slower in a batch of 16, but the GPU's total
    # throughput grows (checked on the model, not the wall clock, so load cannot flake it).
    model = latency.model_profile(MODEL)
    hw = latency.hardware_for("Standard_NC24ads_A100_v4")
    alone = latency.decode_itl_seconds(model, hw, batch=1)
    shared = latency.decode_itl_seconds(model, hw, batch=16)
    assert alone < shared < 16 * alone
    # The server itself serves 16 concurrent requests in one batch, all to completion.
    server = start(loop_thread, speed=50.0)

    async def run(n: int) -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as http:
            body = {"messages": ask("Explain in detail"), "max_tokens": 40}
            return await asyncio.gather(
                *[http.post(f"{server.url}/v1/chat/completions", json=body) for _ in range(n)]
            )

    try:
        responses = loop_thread.run(run(16))
    finally:
        loop_thread.run(server.stop())
    assert [r.status_code for r in responses] == [200] * 16
    assert all(r.json()["usage"]["completion_tokens"] == 40 for r in responses)


def test_log_lines_look_like_vllm_startup_and_access_logs(vllm: InferenceServer) -> None:
    httpx.get(f"{vllm.url}/v1/models")
    lines = vllm.log_lines()
    assert any("vLLM API server version" in line for line in lines)
    assert any("GPU KV cache size:" in line for line in lines)
    assert any("kaitosim engine: synthetic" in line for line in lines)
    assert any(re.search(r'"GET /v1/models HTTP/1.1" 200 OK$', line) for line in lines)


def test_peak_tokens_per_minute_follows_the_hardware(loop_thread: LoopThread) -> None:
    a10 = start(loop_thread, instance_type="Standard_NV36ads_A10_v5", max_model_len=4096)
    h100 = start(loop_thread, instance_type="Standard_NC40ads_H100_v5", max_model_len=4096)
    try:
        assert 0 < a10.peak_tokens_per_minute() < h100.peak_tokens_per_minute()
        config, result = h100.benchmark_log_lines()
        assert config.startswith("KAITO_BENCHMARK_CONFIG ")
        assert '"vllm_total_tpm":' in result
    finally:
        loop_thread.run(a10.stop())
        loop_thread.run(h100.stop())


def test_a_crash_refuses_connections_until_the_pod_restarts(loop_thread: LoopThread) -> None:
    server = start(loop_thread)
    try:
        loop_thread.run(server.apply_fault("crash"))
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{server.url}/health", timeout=2)
        loop_thread.run(server.apply_fault(None))
        assert httpx.get(f"{server.url}/health").status_code == 200
    finally:
        loop_thread.run(server.stop())


def test_a_cut_stream_ends_without_done(loop_thread: LoopThread) -> None:
    server = start(loop_thread, stream_cut_after_tokens=3)
    try:
        loop_thread.run(server.apply_fault("stream_cut"))
        received: list[str] = []
        with (
            pytest.raises(httpx.RemoteProtocolError),
            httpx.stream(
                "POST",
                f"{server.url}/v1/chat/completions",
                json={"messages": ask("Explain in detail"), "max_tokens": 50, "stream": True},
            ) as response,
        ):
            received.extend(line for line in response.iter_lines() if line)
        assert "data: [DONE]" not in received
    finally:
        loop_thread.run(server.stop())


def test_a_dead_engine_fails_health_and_requests(loop_thread: LoopThread) -> None:
    server = start(loop_thread)
    try:
        loop_thread.run(server.apply_fault("error"))
        assert httpx.get(f"{server.url}/health").status_code == 503
        response = httpx.post(f"{server.url}/v1/chat/completions", json={"messages": ask("hi")})
        assert response.status_code == 500
        assert response.json()["error"]["type"] == "InternalServerError"
    finally:
        loop_thread.run(server.stop())


def test_the_slow_fault_multiplies_latency(loop_thread: LoopThread) -> None:
    server = start(loop_thread, speed=1.0, slow_factor=4.0)
    try:
        normal = first_token_seconds(server, "Explain queues")
        loop_thread.run(server.apply_fault("slow"))
        slow = first_token_seconds(server, "Explain queues")
    finally:
        loop_thread.run(server.stop())
    assert slow > normal * 2.5


def test_a_hung_engine_times_clients_out(loop_thread: LoopThread) -> None:
    server = start(loop_thread)
    try:
        loop_thread.run(server.apply_fault("hang"))
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(
                f"{server.url}/v1/chat/completions", json={"messages": ask("hi")}, timeout=0.5
            )
        loop_thread.run(server.apply_fault(None))
        response = httpx.post(
            f"{server.url}/v1/chat/completions", json={"messages": ask("hi"), "max_tokens": 3}
        )
        assert response.status_code == 200
    finally:
        loop_thread.run(server.stop())


@pytest.fixture(scope="module")
def transformers(loop_thread: LoopThread) -> Iterator[InferenceServer]:
    server = start(
        loop_thread, runtime="transformers", served_model="falcon-7b-instruct", max_model_len=2048
    )
    yield server
    loop_thread.run(server.stop())


def test_transformers_health_says_healthy(transformers: InferenceServer) -> None:
    assert httpx.get(f"{transformers.url}/health").json() == {"status": "Healthy"}


def test_transformers_chat_prepends_the_prompt_when_asked(transformers: InferenceServer) -> None:
    prompt = "Tell me about Falcon models"
    full = httpx.post(
        f"{transformers.url}/chat",
        json={
            "prompt": prompt,
            "return_full_text": True,
            "generate_kwargs": {"max_length": 40, "do_sample": False},
        },
    ).json()
    only = httpx.post(
        f"{transformers.url}/chat",
        json={
            "prompt": prompt,
            "return_full_text": False,
            "generate_kwargs": {"max_length": 40, "do_sample": False},
        },
    ).json()
    assert set(full) == {"Result"}
    assert full["Result"] == prompt + only["Result"]
    assert only["Result"]


def test_transformers_chat_without_prompt_is_a_400_detail(transformers: InferenceServer) -> None:
    response = httpx.post(f"{transformers.url}/chat", json={"generate_kwargs": {}})
    assert response.status_code == 400
    assert response.json() == {"detail": "Text generation parameter prompt required"}


def test_transformers_metrics_report_gpu_usage_as_json(transformers: InferenceServer) -> None:
    body = httpx.get(f"{transformers.url}/metrics").json()
    (gpu,) = body["gpu_info"]
    assert gpu["name"] == "NVIDIA A100 80GB PCIe"
    assert gpu["load"].endswith("%")
    assert gpu["memory"]["total"] == "80.00 GB"


def test_transformers_serves_openai_chat_streaming(transformers: InferenceServer) -> None:
    client = openai.OpenAI(base_url=f"{transformers.url}/v1", api_key="x", max_retries=0)
    stream = client.chat.completions.create(
        model="falcon-7b-instruct",
        messages=ask("hello"),
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage is not None


def test_the_smollm2_engine_is_chosen_explicitly_and_announced(loop_thread: LoopThread) -> None:
    server = start(loop_thread, engine="smollm2", speed=50.0)
    try:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL,
            messages=ask("What is the capital of France? Answer briefly."),
            max_tokens=20,
            temperature=0,
        )
        result = raw.parse()
    finally:
        loop_thread.run(server.stop())
    assert raw.headers["x-kaitosim-engine"] == "smollm2"
    assert "Paris" in (result.choices[0].message.content or "")
    assert any("kaitosim engine: smollm2" in line for line in server.log_lines())
