"""The harness against kaitosim over real HTTP: streaming with usage on both Foundry surfaces and
vLLM, the transformers /chat path, and the failures a provider really returns."""

from __future__ import annotations

import asyncio

import pytest

from apps.playground import clients
from kaitosim.foundry import FoundryServer
from tests.kaitosim.loop_thread import LoopThread
from tests.playground.conftest import (
    foundry_endpoint,
    foundry_start,
    inference_start,
    transformers_endpoint,
    vllm_endpoint,
)

CHAT = clients.ChatRequest(
    prompt="Explain continuous batching in two sentences.",
    system_prompt="Be brief.",
    max_tokens=24,
    temperature=0.7,
    seed=7,
)


def assert_streamed_with_server_usage(m: clients.Measurement, *, tokens: int = 24) -> None:
    assert m.ok, m.error_message
    assert m.http_status == 200
    assert m.streamed and m.chunks == tokens
    assert m.output_tokens == tokens and m.input_tokens and m.input_tokens > 0
    assert not m.tokens_estimated
    assert m.ttft_ms is not None and m.e2e_ms is not None and 0 < m.ttft_ms < m.e2e_ms
    assert len(m.itl_ms) == tokens - 1
    assert m.itl_mean_ms is not None and m.itl_mean_ms > 0
    assert m.output_tokens_per_s is not None and m.output_tokens_per_s > 0
    assert m.connect_ms is not None and m.connect_ms >= 0
    assert len(m.text) > tokens


def test_foundry_openai_v1_streams_text_and_reports_usage(foundry: FoundryServer) -> None:
    m = clients.measure_sync(foundry_endpoint(foundry), CHAT, timeout_s=20)
    assert_streamed_with_server_usage(m)
    assert m.finish_reason == "length"


def test_ttft_matches_when_the_simulated_service_sent_the_first_token(
    foundry: FoundryServer,
) -> None:
    m = clients.measure_sync(foundry_endpoint(foundry), CHAT, timeout_s=20)
    record = foundry.records[-1]
    planned_ms = record.ttft_s / foundry.speed * 1000
    assert m.ttft_ms is not None and m.sent_at is not None and m.first_token_at is not None
    assert planned_ms <= m.ttft_ms
    # The server runs in this process: its clock and the harness's are the same perf_counter.
    # The harness's timing points bracket the server's own: it sent before the server received,
    # and saw the first token after the server wrote it (how close is bench/'s question).
    assert record.first_token_written_at is not None
    assert m.sent_at <= record.received_at
    assert record.first_token_written_at <= m.first_token_at
    assert m.ttft_ms == pytest.approx((m.first_token_at - m.sent_at) * 1000)


def test_the_model_inference_api_streams_text_and_reports_usage(foundry: FoundryServer) -> None:
    for deployment in ("Phi-4", "gpt-4.1-mini"):  # an OpenAI model sends usage only when asked
        m = clients.measure_sync(
            foundry_endpoint(foundry, kind=clients.FOUNDRY_INFERENCE, deployment=deployment),
            CHAT,
            timeout_s=20,
        )
        assert_streamed_with_server_usage(m)


def test_a_reasoning_deployment_counts_its_reasoning_tokens(foundry: FoundryServer) -> None:
    m = clients.measure_sync(foundry_endpoint(foundry, deployment="gpt-5.1"), CHAT, timeout_s=20)
    assert m.ok, m.error_message  # max_completion_tokens, which reasoning models require
    assert m.reasoning_tokens == 0 and m.output_tokens == 24


def test_a_kaito_vllm_endpoint_streams_text_and_reports_usage(loop_thread: LoopThread) -> None:
    server = inference_start(loop_thread)
    try:
        m = clients.measure_sync(vllm_endpoint(server), CHAT, timeout_s=20)
    finally:
        loop_thread.run(server.stop())
    assert_streamed_with_server_usage(m)


def test_transformers_chat_is_measured_end_to_end_only_with_estimated_tokens(
    transformers: object,
) -> None:
    from kaitosim.inference import InferenceServer

    assert isinstance(transformers, InferenceServer)
    m = clients.measure_sync(transformers_endpoint(transformers), CHAT, timeout_s=20)
    assert m.ok, m.error_message
    assert not m.streamed
    assert m.ttft_ms is None and m.itl_mean_ms is None and m.itl_ms == []
    assert m.e2e_ms is not None and m.e2e_ms > 0
    assert m.text and not m.text.startswith("Be brief.")  # return_full_text: False
    assert m.tokens_estimated
    assert m.output_tokens == clients.estimate_tokens(m.text)
    assert m.input_tokens == clients.estimate_tokens(f"{CHAT.system_prompt}\n{CHAT.prompt}")


def test_a_wrong_key_is_a_401_with_azures_message(foundry: FoundryServer) -> None:
    m = clients.measure_sync(foundry_endpoint(foundry, key="wrong"), CHAT, timeout_s=20)
    assert not m.ok
    assert (m.http_status, m.error_kind) == (401, "http")
    assert "invalid subscription key" in m.error_message
    assert m.output_tokens is None and m.text == ""


def test_an_unknown_deployment_is_a_404_that_names_the_error_code(foundry: FoundryServer) -> None:
    m = clients.measure_sync(foundry_endpoint(foundry, deployment="no-such"), CHAT, timeout_s=20)
    assert m.http_status == 404
    assert m.error_message.startswith("DeploymentNotFound: The API deployment")


def test_past_the_rate_limit_a_429_carries_retry_after(loop_thread: LoopThread) -> None:
    server = foundry_start(loop_thread)
    server.set_rate_limit(tpm=100)
    try:
        first = clients.measure_sync(foundry_endpoint(server), CHAT, timeout_s=20)
        second = clients.measure_sync(foundry_endpoint(server), CHAT, timeout_s=20)
    finally:
        loop_thread.run(server.stop())
    assert first.ok
    assert (second.http_status, second.error_kind) == (429, "http")
    assert "rate limit of your current AIServices S0 pricing tier" in second.error_message
    # 60 simulated seconds at speed 20: Azure's retry-after-ms, about 3 s
    assert second.retry_after_s is not None and 0 < second.retry_after_s <= 3.0


def test_a_hung_engine_times_out_with_what_was_awaited(loop_thread: LoopThread) -> None:
    server = inference_start(loop_thread)
    loop_thread.run(server.apply_fault("hang"))
    try:
        m = clients.measure_sync(vllm_endpoint(server), CHAT, timeout_s=0.5)
        loop_thread.run(server.apply_fault(None))
        # the engine answers again once it recovers (and the abandoned request drains)
        assert clients.measure_sync(vllm_endpoint(server), CHAT, timeout_s=20).ok
    finally:
        loop_thread.run(server.apply_fault(None))
        loop_thread.run(server.stop())
    assert m.error_kind == "timeout"
    assert m.http_status == 200  # vLLM sends its headers before the first token
    assert m.error_message == "Timed out after 0.5 s waiting for the first token."
    assert m.e2e_ms is not None and m.e2e_ms >= 500
    assert m.output_tokens is None  # no answer came: nothing to count or to price


def test_a_foundry_deployment_slower_than_the_timeout_times_out(loop_thread: LoopThread) -> None:
    server = foundry_start(loop_thread, slow_factor=200.0)
    server.set_fault("slow")
    try:
        m = clients.measure_sync(foundry_endpoint(server), CHAT, timeout_s=0.3)
    finally:
        loop_thread.run(server.stop())
    assert m.error_kind == "timeout"
    assert m.error_message == "Timed out after 0.3 s waiting for the first token."


def test_a_foundry_stream_cut_mid_way_keeps_the_partial_text(loop_thread: LoopThread) -> None:
    server = foundry_start(loop_thread, stream_cut_after_tokens=8)
    server.set_fault("stream_cut")
    try:
        m = clients.measure_sync(foundry_endpoint(server), CHAT, timeout_s=20)
    finally:
        loop_thread.run(server.stop())
    assert m.error_kind == "stream_cut"
    assert m.chunks == 8 and m.text
    assert "after 8 chunk(s)" in m.error_message and "text so far is kept" in m.error_message
    assert m.tokens_estimated and m.output_tokens == clients.estimate_tokens(m.text)


def test_a_vllm_stream_cut_mid_way_keeps_the_partial_text(loop_thread: LoopThread) -> None:
    server = inference_start(loop_thread, stream_cut_after_tokens=5)
    server.set_fault("stream_cut")
    try:
        m = clients.measure_sync(vllm_endpoint(server), CHAT, timeout_s=20)
    finally:
        loop_thread.run(server.stop())
    assert m.error_kind == "stream_cut" and m.text
    assert 5 <= m.chunks < 24


def test_a_refused_connection_is_reported_not_raised() -> None:
    m = clients.measure_sync(
        clients.Endpoint(kind=clients.KAITO_VLLM, url="http://127.0.0.1:9", model="m"), CHAT
    )
    assert m.error_kind == "connect" and "127.0.0.1" in m.error_message


def test_two_requests_start_together_and_one_failing_leaves_the_other(
    foundry: FoundryServer, loop_thread: LoopThread
) -> None:
    server = inference_start(loop_thread)
    try:
        result = asyncio.run(
            clients.measure_together(
                [
                    (vllm_endpoint(server), CHAT),
                    (foundry_endpoint(foundry, key="wrong"), CHAT),
                ],
                timeout_s=20,
            )
        )
        both = asyncio.run(
            clients.measure_together(
                [(vllm_endpoint(server), CHAT), (foundry_endpoint(foundry), CHAT)], timeout_s=20
            )
        )
    finally:
        loop_thread.run(server.stop())
    kaito, failed = result.measurements
    assert_streamed_with_server_usage(kaito)
    assert failed.http_status == 401
    assert all(m.ok for m in both.measurements)
    a, b = both.measurements
    assert a.sent_at is not None and b.sent_at is not None
    assert both.start_skew_ms is not None
    assert abs(a.sent_at - b.sent_at) * 1000 == pytest.approx(both.start_skew_ms)
    # together: both requests were out before either side saw its first token
    assert a.first_token_at is not None and b.first_token_at is not None
    assert max(a.sent_at, b.sent_at) <= min(a.first_token_at, b.first_token_at)


def test_a_side_that_cannot_be_prepared_does_not_hold_the_other_back(
    foundry: FoundryServer,
) -> None:
    broken = clients.Endpoint(kind=clients.FOUNDRY_OPENAI, url=foundry.url, auth="api_key")
    result = asyncio.run(
        clients.measure_together([(broken, CHAT), (foundry_endpoint(foundry), CHAT)], timeout_s=20)
    )
    assert result.measurements[0].error_kind == "config"
    assert result.measurements[1].ok
    assert result.start_skew_ms is None  # only one request went out


def test_an_unavailable_service_is_a_503_with_retry_after(loop_thread: LoopThread) -> None:
    server = foundry_start(loop_thread)
    server.set_fault("unavailable")
    try:
        m = clients.measure_sync(
            foundry_endpoint(server, kind=clients.FOUNDRY_INFERENCE), CHAT, timeout_s=20
        )
    finally:
        loop_thread.run(server.stop())
    assert (m.http_status, m.error_kind, m.retry_after_s) == (503, "http", 1.0)
    assert m.error_message.startswith("ServiceUnavailable: The service is temporarily unable")
