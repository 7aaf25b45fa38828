"""The one place kaitoweb talks to inference endpoints: a measurement harness for every kind.

Every kind goes over the same HTTP stack (httpx, one fresh ``AsyncClient`` per request, HTTP/1.1,
the same timeouts) and is timed at the same points, so neither side's SDK adds overhead the other
does not pay:

    sent_at          just before the request is handed to httpx (so connection set-up counts,
                     for both sides alike; ``connect_ms`` says how much of it that was)
    first_token_at   the first streamed chunk whose ``delta.content`` is not empty (role-only and
                     content-filter chunks are not tokens)
    token_times      every content chunk's arrival
    ended_at         the end of the response body (``data: [DONE]``, after the usage chunk)

    TTFT = first_token_at - sent_at;  E2E = ended_at - sent_at
    ITL list = the gaps between consecutive content chunks (the first token is not in it, as
               guidellm defines inter-token latency); mean ITL = (last - first content chunk) /
               (content tokens - 1), content tokens = output - reasoning tokens (guidellm's
               formula; with one token per chunk, as vLLM and Foundry send, both agree)
    output tokens/s = output tokens / E2E seconds

Token counts come from the server's ``usage``; only when it sends none are they estimated here
(4 characters a token, the rule kaitosim follows too) and ``tokens_estimated`` is set.

Requests are built as each kind's SDK builds them (checked against the real SDKs in the tests):

    foundry_openai            openai SDK, ``OpenAI(base_url=".../openai/v1/", api_key=KEY)``:
                              POST {base}/chat/completions, ``Authorization: Bearer``,
                              ``model`` = deployment, ``max_completion_tokens``,
                              ``stream_options.include_usage``
    foundry_inference         azure-ai-inference ``ChatCompletionsClient(endpoint=".../models")``
                              with ``model_extras={"stream_options": {"include_usage": True}}``:
                              POST {endpoint}/chat/completions?api-version=2024-05-01-preview,
                              ``api-key`` and ``Authorization: Bearer`` (a key credential sends
                              both), ``extra-parameters: pass-through``, ``max_tokens``
    kaito_vllm                vLLM's OpenAI server: POST {service}/v1/chat/completions
    openai_compatible         the openai SDK against any base URL: POST {base}/chat/completions
    kaito_transformers_chat   KAITO's transformers runtime: POST {service}/chat with ``prompt`` and
                              ``generate_kwargs``; it does not stream, so only E2E is measured
                              (``streamed`` is False; TTFT and ITL are None, never guessed)

Failures are recorded, never raised: the HTTP status and the provider's message (401, 429 with
its Retry-After, 5xx), a timeout, a refused connection, or a stream cut mid-way (the text received
so far is kept). One side failing never disturbs the other.

Entra ID (``auth="entra_id"``) takes a token from azure-identity's ``DefaultAzureCredential``
before the clock starts. That path cannot be exercised here (no tenant), so it has no test.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import itertools
import json
import math
import ssl
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import anyio._backends._asyncio  # noqa: F401  (see below)
import h11  # noqa: F401
import httpcore  # noqa: F401
import httpx

from apps.playground.stats import percentile
from kaitoweb.redaction import redact

# httpx loads its transport stack (httpcore, h11, anyio's asyncio backend) on a client's first
# request; in a fresh worker that is ~15 ms of imports on the start line, which one side of a
# comparison would pay and the other not. The imports above load it up front instead.

FOUNDRY_OPENAI = "foundry_openai"
FOUNDRY_INFERENCE = "foundry_inference"
KAITO_VLLM = "kaito_vllm"
KAITO_TRANSFORMERS_CHAT = "kaito_transformers_chat"
OPENAI_COMPATIBLE = "openai_compatible"
KINDS = (FOUNDRY_OPENAI, FOUNDRY_INFERENCE, KAITO_VLLM, KAITO_TRANSFORMERS_CHAT, OPENAI_COMPATIBLE)
STREAMING_KINDS = frozenset(KINDS) - {KAITO_TRANSFORMERS_CHAT}

AUTH_NONE = "none"
AUTH_API_KEY = "api_key"
AUTH_ENTRA_ID = "entra_id"

INFERENCE_API_VERSION = "2024-05-01-preview"
# Token scopes for Entra ID (reference/azure/foundry_models.yaml, "Calling Foundry from Python").
ENTRA_SCOPES = {
    FOUNDRY_OPENAI: "https://ai.azure.com/.default",
    FOUNDRY_INFERENCE: "https://cognitiveservices.azure.com/.default",
}
ENTRA_DEFAULT_SCOPE = "https://cognitiveservices.azure.com/.default"
USER_AGENT = "kaitoweb-playground (httpx)"
CHARS_PER_TOKEN = 4
CONNECT_TIMEOUT_S = 10.0
ERROR_BODY_LIMIT = 2000


class ClientConfigError(Exception):
    """A target that cannot be called as configured (no key, azure-identity missing, ...)."""


@dataclass(frozen=True)
class Endpoint:
    """How to reach one target: what `services` hands over, so this module needs no ORM."""

    kind: str
    url: str
    model: str = ""
    auth: str = AUTH_NONE
    api_key: str = field(default="", repr=False)
    api_version: str = INFERENCE_API_VERSION
    ca_pem: str = field(default="", repr=False)  # a private CA to trust; empty: the system's
    # A KAITO deployment through the API server's service proxy: the cluster's auth header and
    # TLS context (its CA, and a client certificate if the kubeconfig has one), as
    # `apps.clusters.kube.proxy_http_settings` reads them. They win over auth and ca_pem.
    extra_headers: dict[str, str] = field(default_factory=dict, repr=False, compare=False)
    tls: ssl.SSLContext | bool | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class ChatRequest:
    """What to ask, the same for every side of a comparison."""

    prompt: str
    system_prompt: str = ""
    max_tokens: int = 256
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None

    def messages(self) -> list[dict[str, str]]:
        out = []
        if self.system_prompt:
            out.append({"role": "system", "content": self.system_prompt})
        out.append({"role": "user", "content": self.prompt})
        return out

    def flat_prompt(self) -> str:
        """The prompt as one string, for the transformers runtime's ``/chat``."""
        return f"{self.system_prompt}\n\n{self.prompt}" if self.system_prompt else self.prompt


@dataclass
class Measurement:
    """One request as measured; filled in while it runs, so a reader can show progress."""

    kind: str
    streamed: bool
    state: str = "pending"  # pending, sending, streaming, done, failed
    parts: list[str] = field(default_factory=list)
    sent_at: float | None = None
    first_token_at: float | None = None
    ended_at: float | None = None
    token_times: list[float] = field(default_factory=list)
    connect_ms: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    reasoning_tokens: int | None = None
    tokens_estimated: bool = False
    finish_reason: str = ""
    http_status: int | None = None
    error_kind: str = ""  # "", http, timeout, connect, stream_cut, stream_error, transport, config
    error_message: str = ""
    retry_after_s: float | None = None

    @property
    def text(self) -> str:
        return "".join(self.parts)

    @property
    def ok(self) -> bool:
        return self.state == "done" and not self.error_kind

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed")

    @property
    def chunks(self) -> int:
        return len(self.token_times)

    @property
    def ttft_ms(self) -> float | None:
        if not self.streamed or self.first_token_at is None or self.sent_at is None:
            return None
        return (self.first_token_at - self.sent_at) * 1000

    @property
    def e2e_ms(self) -> float | None:
        if self.ended_at is None or self.sent_at is None:
            return None
        return (self.ended_at - self.sent_at) * 1000

    @property
    def itl_ms(self) -> list[float]:
        times = self.token_times
        return [(b - a) * 1000 for a, b in itertools.pairwise(times)]

    @property
    def itl_mean_ms(self) -> float | None:
        if len(self.token_times) < 2:
            return None
        content_tokens = self.chunks
        if self.output_tokens is not None and not self.tokens_estimated:
            content_tokens = self.output_tokens - (self.reasoning_tokens or 0)
        if content_tokens < 2:
            return None
        return (self.token_times[-1] - self.token_times[0]) * 1000 / (content_tokens - 1)

    @property
    def itl_p95_ms(self) -> float | None:
        return percentile(self.itl_ms, 95)

    @property
    def output_tokens_per_s(self) -> float | None:
        e2e = self.e2e_ms
        if not self.ok or not self.output_tokens or not e2e:
            return None
        return self.output_tokens / (e2e / 1000)

    def fail(self, kind: str, message: str) -> None:
        self.state = "failed"
        self.error_kind = kind
        self.error_message = redact(message)  # a provider may echo the key back


@dataclass(frozen=True)
class PairResult:
    measurements: list[Measurement]
    start_skew_ms: float | None  # how far apart the requests were handed to httpx


# --- building requests ---------------------------------------------------------------------------


def chat_url(endpoint: Endpoint) -> str:
    """The URL each kind's SDK (or runtime) posts a chat to, without the query string."""
    base = endpoint.url.strip().rstrip("/")
    if endpoint.kind == FOUNDRY_OPENAI:
        # The openai SDK appends chat/completions to base_url; Foundry's base is .../openai/v1/.
        if not base.endswith("/openai/v1"):
            base += "/openai/v1"
        return f"{base}/chat/completions"
    if endpoint.kind == KAITO_VLLM:
        base = base.removesuffix("/v1")
        return f"{base}/v1/chat/completions"
    if endpoint.kind == KAITO_TRANSFORMERS_CHAT:
        return f"{base}/chat"
    if endpoint.kind in (FOUNDRY_INFERENCE, OPENAI_COMPATIBLE):
        return f"{base}/chat/completions"
    raise ClientConfigError(f"unknown target kind {endpoint.kind!r}")


def request_body(endpoint: Endpoint, chat: ChatRequest) -> dict[str, Any]:
    if endpoint.kind == KAITO_TRANSFORMERS_CHAT:
        generate: dict[str, Any] = {"max_new_tokens": chat.max_tokens}
        do_sample = chat.temperature is None or chat.temperature > 0
        generate["do_sample"] = do_sample
        if do_sample and chat.temperature is not None:
            generate["temperature"] = chat.temperature
        if chat.top_p is not None:
            generate["top_p"] = chat.top_p
        return {
            "prompt": chat.flat_prompt(),
            "return_full_text": False,
            "generate_kwargs": generate,
        }
    sampling: dict[str, Any] = {}
    if chat.seed is not None:
        sampling["seed"] = chat.seed
    if chat.temperature is not None:
        sampling["temperature"] = chat.temperature
    if chat.top_p is not None:
        sampling["top_p"] = chat.top_p
    usage = {"stream_options": {"include_usage": True}}
    if endpoint.kind == FOUNDRY_INFERENCE:
        # azure-ai-inference's order: messages, stream, max_tokens, model, then model_extras.
        return {
            "messages": chat.messages(),
            "stream": True,
            "max_tokens": chat.max_tokens,
            **({"model": endpoint.model} if endpoint.model else {}),
            **sampling,
            **usage,
        }
    # openai SDK: max_completion_tokens is its current name (reasoning models refuse max_tokens);
    # vLLM and other OpenAI-compatible servers get max_tokens, which every one of them reads.
    limit = "max_completion_tokens" if endpoint.kind == FOUNDRY_OPENAI else "max_tokens"
    return {
        "model": endpoint.model,
        "stream": True,
        "messages": chat.messages(),
        limit: chat.max_tokens,
        **sampling,
        **usage,
    }


def request_headers(endpoint: Endpoint, *, bearer_token: str | None = None) -> dict[str, str]:
    headers = {
        "Accept": "application/json",
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
    }
    if endpoint.kind == FOUNDRY_INFERENCE:
        headers["extra-parameters"] = "pass-through"  # what model_extras adds
        headers["x-ms-client-request-id"] = str(uuid.uuid4())
    if endpoint.auth == AUTH_API_KEY:
        if not endpoint.api_key:
            raise ClientConfigError("this target uses an API key, but none is stored")
        if endpoint.kind == FOUNDRY_INFERENCE:
            headers["api-key"] = endpoint.api_key
        headers["Authorization"] = f"Bearer {endpoint.api_key}"
    elif endpoint.auth == AUTH_ENTRA_ID:
        if not bearer_token:
            raise ClientConfigError("no Entra ID token")
        headers["Authorization"] = f"Bearer {bearer_token}"
    headers.update(endpoint.extra_headers)
    return headers


def tls_verify(endpoint: Endpoint) -> ssl.SSLContext | bool:
    """What httpx verifies the server's certificate against: the target's own CA, if it has
    one (an internal load balancer, the Kubernetes API's service proxy), else the system's."""
    if endpoint.tls is not None:
        return endpoint.tls
    if not endpoint.ca_pem.strip():
        return True
    try:
        return ssl.create_default_context(cadata=endpoint.ca_pem)
    except (ssl.SSLError, ValueError) as exc:
        raise ClientConfigError(f"the CA certificate is not valid PEM: {exc}") from None


def build_request(
    endpoint: Endpoint, chat: ChatRequest, *, bearer_token: str | None = None
) -> httpx.Request:
    params = {"api-version": endpoint.api_version} if endpoint.kind == FOUNDRY_INFERENCE else None
    return httpx.Request(
        "POST",
        chat_url(endpoint),
        params=params,
        headers=request_headers(endpoint, bearer_token=bearer_token),
        json=request_body(endpoint, chat),
    )


_credential_lock = threading.Lock()
_credential: Any = None


def entra_token(endpoint: Endpoint) -> str:
    """An Entra ID access token from DefaultAzureCredential (blocking; call off the loop)."""
    global _credential
    try:
        from azure.identity import DefaultAzureCredential
    except ImportError:
        raise ClientConfigError(
            "Entra ID needs the azure-identity package (pip install azure-identity)"
        ) from None
    with _credential_lock:
        if _credential is None:
            _credential = DefaultAzureCredential()
    scope = ENTRA_SCOPES.get(endpoint.kind, ENTRA_DEFAULT_SCOPE)
    return str(_credential.get_token(scope).token)


# --- reading answers -----------------------------------------------------------------------------


def estimate_tokens(text: str) -> int:
    """A local token estimate, used only when the server reports no usage."""
    return math.ceil(len(text) / CHARS_PER_TOKEN) if text else 0


def error_message(body: bytes, status: int, reason: str = "") -> str:
    """The provider's own message from an error body (OpenAI/Azure, vLLM, FastAPI shapes)."""
    text = body[:ERROR_BODY_LIMIT].decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text or reason or f"HTTP {status}"
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):
            message = str(error.get("message") or "")
            code = error.get("code")
            if isinstance(code, str) and code and not code.isdigit() and code not in message:
                return f"{code}: {message}" if message else code
            return message or json.dumps(error)
        if isinstance(error, str) and error:
            return error
        for key in ("message", "detail"):
            value = data.get(key)
            if value:
                return value if isinstance(value, str) else json.dumps(value)
    return text


def retry_after_seconds(headers: httpx.Headers) -> float | None:
    """Azure's ``retry-after-ms`` if sent, else ``Retry-After`` (seconds or an HTTP date)."""
    millis = headers.get("retry-after-ms")
    if millis:
        with contextlib.suppress(ValueError):
            return float(millis) / 1000
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _record_usage(m: Measurement, usage: dict[str, Any]) -> None:
    prompt = usage.get("prompt_tokens")
    completion = usage.get("completion_tokens")
    if isinstance(prompt, int):
        m.input_tokens = prompt
    if isinstance(completion, int):
        m.output_tokens = completion
    details = usage.get("completion_tokens_details")
    if isinstance(details, dict) and isinstance(details.get("reasoning_tokens"), int):
        m.reasoning_tokens = details["reasoning_tokens"]


async def _read_sse(response: httpx.Response, m: Measurement) -> None:
    m.state = "streaming"
    done = False
    async for line in response.aiter_lines():
        now = time.perf_counter()
        if not line.startswith("data:"):
            continue  # blank separators, ": comments", event names
        payload = line[5:].strip()
        if payload == "[DONE]":
            done = True
            break
        try:
            chunk = json.loads(payload)
        except ValueError:
            continue
        if not isinstance(chunk, dict):
            continue
        if chunk.get("error"):
            # vLLM reports an engine failure inside the stream, then [DONE].
            error = chunk["error"]
            code = error.get("code") if isinstance(error, dict) else None
            if isinstance(code, int):
                m.http_status = code
            m.fail("stream_error", error_message(json.dumps(chunk).encode(), code or 500))
            continue
        if chunk.get("usage"):
            _record_usage(m, chunk["usage"])
        for choice in chunk.get("choices") or []:
            content = (choice.get("delta") or {}).get("content")
            if content:
                if m.first_token_at is None:
                    m.first_token_at = now
                m.token_times.append(now)
                m.parts.append(content)
            if choice.get("finish_reason"):
                m.finish_reason = str(choice["finish_reason"])
    m.ended_at = time.perf_counter()
    if m.error_kind:
        return
    if not done:
        m.fail(
            "stream_cut",
            f"The stream ended without [DONE] after {m.chunks} chunk(s); the text so far is kept.",
        )
        return
    m.state = "done"


async def _read_transformers(response: httpx.Response, m: Measurement) -> None:
    body = await response.aread()
    m.ended_at = time.perf_counter()
    try:
        data = json.loads(body)
    except ValueError:
        m.fail("transport", f"not JSON: {body[:200].decode('utf-8', 'replace')}")
        return
    result = data.get("Result") if isinstance(data, dict) else None
    if not isinstance(result, str):
        m.fail("transport", f"no Result in the answer: {body[:200].decode('utf-8', 'replace')}")
        return
    m.parts.append(result)
    m.state = "done"


async def _exchange(client: httpx.AsyncClient, request: httpx.Request, m: Measurement) -> None:
    m.state = "sending"
    m.sent_at = time.perf_counter()
    response = await client.send(request, stream=True)
    try:
        m.http_status = response.status_code
        if response.status_code >= 400:
            body = await response.aread()
            m.ended_at = time.perf_counter()
            m.retry_after_s = retry_after_seconds(response.headers)
            m.fail("http", error_message(body, response.status_code, response.reason_phrase))
            return
        if m.streamed:
            await _read_sse(response, m)
        else:
            await _read_transformers(response, m)
    finally:
        await response.aclose()


def _finish_tokens(m: Measurement, chat: ChatRequest) -> None:
    """Fill in token counts the server did not report, flagged as estimates."""
    if not (m.ok or m.chunks or m.output_tokens is not None):
        return  # no answer came (an HTTP error, a refused connection, a timeout before it)
    if m.output_tokens is None:
        m.output_tokens = estimate_tokens(m.text)
        m.tokens_estimated = True
    if m.input_tokens is None:
        m.input_tokens = estimate_tokens("\n".join(x["content"] for x in chat.messages()))
        m.tokens_estimated = True


def _describe_timeout(m: Measurement, timeout_s: float) -> str:
    if m.first_token_at is None:
        what = "the answer" if not m.streamed else "the first token"
        return f"Timed out after {timeout_s:g} s waiting for {what}."
    return (
        f"Timed out after {timeout_s:g} s mid-stream ({m.chunks} chunk(s) received); "
        "the text so far is kept."
    )


async def measure(
    endpoint: Endpoint,
    chat: ChatRequest,
    *,
    timeout_s: float = 60.0,
    live: Measurement | None = None,
    barrier: asyncio.Barrier | None = None,
) -> Measurement:
    """Send one chat and measure it. Never raises for a failed request: see ``error_kind``.

    ``live`` is filled in as the answer arrives (for a reader showing progress). ``barrier``
    holds the request until every party of a comparison is ready to send.
    """
    m = live or Measurement(kind=endpoint.kind, streamed=endpoint.kind in STREAMING_KINDS)
    m.streamed = endpoint.kind in STREAMING_KINDS
    ready = False
    try:
        try:
            token = None
            if endpoint.auth == AUTH_ENTRA_ID:
                token = await asyncio.to_thread(entra_token, endpoint)
            request = build_request(endpoint, chat, bearer_token=token)
            verify = tls_verify(endpoint)
        except ClientConfigError as exc:
            m.fail("config", str(exc))
            return m
        except Exception as exc:  # e.g. azure-identity finding no credential
            m.fail("config", f"{type(exc).__name__}: {exc}")
            return m
        connect: dict[str, float] = {}

        async def trace(event: str, info: dict[str, Any]) -> None:
            if event == "connection.connect_tcp.started":
                connect["start"] = time.perf_counter()
            elif event in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
                connect["end"] = time.perf_counter()

        request.extensions["trace"] = trace
        timeout = httpx.Timeout(timeout_s, connect=min(CONNECT_TIMEOUT_S, timeout_s))
        async with httpx.AsyncClient(timeout=timeout, verify=verify) as client:
            if barrier is not None:
                ready = True
                await barrier.wait()
            try:
                async with asyncio.timeout(timeout_s):
                    await _exchange(client, request, m)
            except (TimeoutError, httpx.TimeoutException):
                m.fail("timeout", _describe_timeout(m, timeout_s))
            except httpx.ConnectError as exc:
                m.fail("connect", f"Could not connect to {request.url.host}: {exc}")
            except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
                if m.state == "streaming":
                    m.fail(
                        "stream_cut",
                        f"The connection closed mid-stream after {m.chunks} chunk(s) "
                        f"({type(exc).__name__}: {exc}); the text so far is kept.",
                    )
                else:
                    m.fail("transport", f"{type(exc).__name__}: {exc}")
            except httpx.HTTPError as exc:
                m.fail("transport", f"{type(exc).__name__}: {exc}")
            if "start" in connect and "end" in connect:
                m.connect_ms = (connect["end"] - connect["start"]) * 1000
    except Exception as exc:  # a bug here must not take the other side down
        m.fail("transport", f"{type(exc).__name__}: {exc}")
    finally:
        if barrier is not None and not ready:
            # Failed before the start line: still release the others (they must not wait).
            with contextlib.suppress(asyncio.BrokenBarrierError):
                await barrier.wait()
        if m.sent_at is not None and m.ended_at is None:
            m.ended_at = time.perf_counter()
        if m.state not in ("done", "failed"):
            m.state = "failed"
        _finish_tokens(m, chat)
    return m


async def measure_together(
    jobs: Sequence[tuple[Endpoint, ChatRequest]],
    *,
    timeout_s: float = 60.0,
    live: Sequence[Measurement] | None = None,
) -> PairResult:
    """Send several chats at the same moment (after each is fully prepared); measure each.

    The start skew is how far apart the requests were handed to httpx (max - min ``sent_at``).
    """
    barrier = asyncio.Barrier(len(jobs))
    measurements = (
        list(live)
        if live is not None
        else [Measurement(kind=ep.kind, streamed=ep.kind in STREAMING_KINDS) for ep, _ in jobs]
    )
    await asyncio.gather(
        *(
            measure(ep, chat, timeout_s=timeout_s, live=m, barrier=barrier)
            for (ep, chat), m in zip(jobs, measurements, strict=True)
        )
    )
    sent = [m.sent_at for m in measurements if m.sent_at is not None]
    skew = (max(sent) - min(sent)) * 1000 if len(sent) >= 2 else None
    return PairResult(measurements=measurements, start_skew_ms=skew)


def measure_sync(endpoint: Endpoint, chat: ChatRequest, *, timeout_s: float = 60.0) -> Measurement:
    """`measure` for synchronous callers (one request, its own event loop)."""
    return asyncio.run(measure(endpoint, chat, timeout_s=timeout_s))
