"""Simulated Microsoft Foundry endpoint (pay-per-token deployments), on aiohttp.

Deployments are the ``name`` entries of ``reference/azure/foundry_models.yaml`` (``gpt-4.1-mini``,
``Phi-4``, ...). Retired models (``lifecycle: retired``) answer 404 ``DeploymentNotFound``
unless the server is started with ``serve_retired=True``. Three surfaces, all on one port:

* **OpenAI v1 API** (what Microsoft recommends since azure-ai-inference's retirement):
  ``POST /openai/v1/chat/completions`` (``model`` = deployment name, no api-version),
  ``GET /openai/v1/models`` and ``GET /openai/v1/models/{name}``. Use
  ``OpenAI(base_url=f"{url}/openai/v1/", api_key=KEY)``.
* **Azure AI Model Inference API**: ``POST /models/chat/completions?api-version=2024-05-01-preview``
  (model in the body or the ``x-ms-model-mesh-model-name`` header) and ``GET /models/info``. Use
  ``ChatCompletionsClient(endpoint=f"{url}/models", credential=AzureKeyCredential(KEY))``.
* **Classic Azure OpenAI**: ``POST /openai/deployments/{name}/chat/completions?api-version=...``
  (``AzureOpenAI(azure_endpoint=url, api_version=...)``).

Behaviour copied from Azure: the key comes in ``api-key`` or ``Authorization: Bearer`` (else 401
with Azure's body); api-version is required on the two Azure-style surfaces (400
``MissingApiVersionParameter``, or ``BadRequest`` "API version not supported"); JSON keys come
sorted; responses carry ``prompt_filter_results`` and per-choice ``content_filter_results``; a
streamed Azure OpenAI answer starts with a chunk that has empty ``choices`` and only
``prompt_filter_results``; usage comes in a final chunk with empty ``choices`` when
``stream_options.include_usage`` is set (always, for non-OpenAI models on ``/models``); reasoning
models (gpt-5.1) reject ``max_tokens`` ("Use 'max_completion_tokens' instead") and count reasoning
tokens when ``reasoning_effort`` is low/medium/high; past a tokens-per-minute or
requests-per-minute limit requests get 429 with ``Retry-After``/``retry-after-ms`` and
``x-ratelimit-remaining-*`` headers (tokens are estimated as prompt + max_tokens over a sliding
minute, requests over 10-second windows of RPM/6, as Azure documents).

Content filter triggers (case-insensitive, anywhere in the messages), documented here because real
filters cannot be: ``kaitosim:violence``, ``kaitosim:hate``, ``kaitosim:sexual``,
``kaitosim:self_harm`` (400 ``content_filter`` with ``innererror.content_filter_result``, severity
high), ``kaitosim:jailbreak`` (same, jailbreak detected) and ``kaitosim:filter-output`` (the
answer is cut with ``finish_reason: content_filter`` and a filtered ``violence`` result).

Latency per request follows :mod:`kaitosim.latency` (region round trip, model speed, deployment
type, deterministic jitter from ``seed``), divided by ``speed``. Rate-limit windows run in simulated
time too.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml
from aiohttp import web

from kaitosim import latency
from kaitosim.engine import (
    SamplingParams,
    StopChecker,
    TextEngine,
    get_engine,
    message_text,
    render_chat,
)

SUPPORTED_API_VERSIONS = (
    "2024-05-01-preview",
    "2024-08-01-preview",
    "2024-10-21",
    "2024-12-01-preview",
    "2025-01-01-preview",
    "2025-03-01-preview",
    "2025-04-01-preview",
    "2025-05-01",
)
FOUNDRY_FAULTS = ("error", "unavailable", "slow", "stream_cut", "hang")
FILTER_TRIGGERS: dict[str, str] = {
    "kaitosim:violence": "violence",
    "kaitosim:hate": "hate",
    "kaitosim:sexual": "sexual",
    "kaitosim:self_harm": "self_harm",
    "kaitosim:jailbreak": "jailbreak",
}
OUTPUT_FILTER_TRIGGER = "kaitosim:filter-output"
REASONING_TOKENS = {"minimal": 16, "low": 96, "medium": 320, "high": 1200}

# dated model versions that Azure OpenAI reports in responses
MODEL_VERSIONS = {
    "gpt-5.1": "gpt-5.1-2025-11-13",
    "gpt-4.1": "gpt-4.1-2025-04-14",
    "gpt-4.1-mini": "gpt-4.1-mini-2025-04-14",
    "gpt-4o": "gpt-4o-2024-11-20",
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
}
REGION_NAMES = {
    "eastus": "East US",
    "eastus2": "East US 2",
    "westus": "West US",
    "westus3": "West US 3",
    "centralus": "Central US",
    "northcentralus": "North Central US",
    "southcentralus": "South Central US",
    "westeurope": "West Europe",
    "northeurope": "North Europe",
    "swedencentral": "Sweden Central",
    "francecentral": "France Central",
    "uksouth": "UK South",
    "japaneast": "Japan East",
    "australiaeast": "Australia East",
}
MSG_401 = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a "
    "valid key for an active subscription and use a correct regional API endpoint for your "
    "resource."
)
MSG_DEPLOYMENT_NOT_FOUND = (
    "The API deployment for this resource does not exist. If you created the deployment within the "
    "last 5 minutes, please wait a moment and try again."
)
MSG_CONTENT_FILTER = (
    "The response was filtered due to the prompt triggering Azure OpenAI's content management "
    "policy. Please modify your prompt and retry. To learn more about our content filtering "
    "policies please read our documentation: https://go.microsoft.com/fwlink/?linkid=2198766"
)


@dataclass(frozen=True)
class Deployment:
    """One Foundry deployment (a row of foundry_models.yaml)."""

    name: str
    provider: str
    family: str
    input_per_1m: float
    output_per_1m: float
    lifecycle: str
    retired_on: str | None = None
    kaito_preset: str | None = None

    @property
    def is_openai(self) -> bool:
        return self.family == "gpt"

    @property
    def model_version(self) -> str:
        return MODEL_VERSIONS.get(self.name, self.name)

    @property
    def reasoning(self) -> bool:
        return latency.foundry_profile(self.name).reasoning

    @property
    def provider_name(self) -> str:
        return self.provider.split(" (")[0]


def load_deployments() -> list[Deployment]:
    path = latency.REFERENCE_DIR / "azure" / "foundry_models.yaml"
    with path.open(encoding="utf-8") as fh:
        data = yaml.safe_load(fh) or {}
    return [
        Deployment(
            name=str(m["name"]),
            provider=str(m.get("provider", "")),
            family=str(m.get("family", "")),
            input_per_1m=float(m.get("input_per_1m") or 0.0),
            output_per_1m=float(m.get("output_per_1m") or 0.0),
            lifecycle=str(m.get("lifecycle", "ga")),
            retired_on=str(m["retired_on"]) if m.get("retired_on") else None,
            kaito_preset=m.get("kaito_preset"),
        )
        for m in data.get("models", []) or []
    ]


class FoundryError(Exception):
    def __init__(
        self, status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None
    ):
        super().__init__(json.dumps(body))
        self.status = status
        self.body = dict(body)
        self.headers = dict(headers or {})


def _azure_json(body: Any) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _sse(body: Any) -> bytes:
    payload = body if isinstance(body, str) else _azure_json(body).decode()
    return f"data: {payload}\n\n".encode()


def _invalid(message: str, param: str | None, code: str | None) -> FoundryError:
    return FoundryError(
        400,
        {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": param,
                "code": code,
            }
        },
    )


def _safe(categories: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in categories:
        if name in ("jailbreak", "protected_material_code", "protected_material_text"):
            out[name] = {"filtered": False, "detected": False}
        else:
            out[name] = {"filtered": False, "severity": "safe"}
    return out


PROMPT_CATEGORIES = ("hate", "jailbreak", "self_harm", "sexual", "violence")
COMPLETION_CATEGORIES = (
    "hate",
    "protected_material_code",
    "protected_material_text",
    "self_harm",
    "sexual",
    "violence",
)


@dataclass
class _Window:
    """Sliding-window usage for one deployment (simulated seconds)."""

    tokens: deque[tuple[float, int]] = field(default_factory=deque)
    requests: deque[float] = field(default_factory=deque)

    def trim(self, now: float) -> None:
        while self.tokens and self.tokens[0][0] <= now - 60.0:
            self.tokens.popleft()
        while self.requests and self.requests[0] <= now - 10.0:
            self.requests.popleft()

    def used_tokens(self) -> int:
        return sum(n for _, n in self.tokens)


@dataclass
class RequestRecord:
    """One request as the simulated service accounted it (for cost checks in tests)."""

    surface: str
    deployment: str
    status: int
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    ttft_s: float = 0.0
    stream: bool = False
    # time.perf_counter() when the request arrived and when its first token was written, so a
    # client in the same process can check its own timing points against the server's.
    received_at: float = 0.0
    first_token_written_at: float | None = None

    def cost_usd(self, deployment: Deployment) -> float:
        return (
            self.prompt_tokens * deployment.input_per_1m
            + self.completion_tokens * deployment.output_per_1m
        ) / 1e6


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class FoundryServer:
    """A running simulated Foundry resource. Create it with :func:`start_foundry_server`."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        api_keys: list[str] | None = None,
        *,
        speed: float = 1.0,
        region: str = "eastus",
        deployment_type: str = "global",
        tpm_limit: int | None = None,
        rpm_limit: int | None = None,
        jitter: bool = True,
        seed: int = 0,
        engine: str | None = None,
        serve_retired: bool = False,
        default_deployment: str | None = None,
        slow_factor: float = 5.0,
        stream_cut_after_tokens: int = 8,
        stream_batch_tokens: int = 1,
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be > 0")
        self.host = host
        self.port = port
        self.api_keys = list(api_keys) if api_keys is not None else None
        self.speed = speed
        self.region = region.lower().replace(" ", "")
        self.deployment_type = deployment_type
        self.jitter = jitter
        self.serve_retired = serve_retired
        self.default_deployment = default_deployment
        self.slow_factor = slow_factor
        self.stream_cut_after_tokens = stream_cut_after_tokens
        self.stream_batch_tokens = max(1, stream_batch_tokens)
        self.engine: TextEngine = get_engine(engine)
        self.deployments = {d.name: d for d in load_deployments()}
        self._limits: dict[str | None, tuple[int | None, int | None]] = {
            None: (tpm_limit, rpm_limit)
        }
        self._windows: dict[str, _Window] = {}
        self._rng = random.Random(seed)  # noqa: S311 - latency jitter, not crypto
        self._anchor = time.monotonic()
        self.fault: str | None = None
        self.records: list[RequestRecord] = []
        self._runner: web.AppRunner | None = None
        self._transports: set[asyncio.Transport] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    # public API ------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_route("POST", "/openai/v1/chat/completions", self._v1_chat)
        app.router.add_route("GET", "/openai/v1/models", self._v1_models)
        app.router.add_route("GET", "/openai/v1/models/{name}", self._v1_model)
        app.router.add_route("POST", "/models/chat/completions", self._models_chat)
        app.router.add_route("GET", "/models/info", self._models_info)
        app.router.add_route(
            "POST", "/openai/deployments/{name}/chat/completions", self._deployment_chat
        )
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        if self.port == 0:
            server = site._server
            sockets = getattr(server, "sockets", None) or []
            self.port = int(sockets[0].getsockname()[1])

    async def stop(self) -> None:
        for transport in list(self._transports):
            transport.abort()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def set_fault(self, name: str | None) -> None:
        """Faults: ``error`` (500), ``unavailable`` (503), ``slow``, ``stream_cut``, ``hang``."""
        if name is not None and name not in FOUNDRY_FAULTS:
            raise ValueError(f"unknown fault {name!r}; known: {', '.join(FOUNDRY_FAULTS)}")
        self.fault = name

    def set_rate_limit(
        self, tpm: int | None, rpm: int | None = None, deployment: str | None = None
    ) -> None:
        """Limit tokens and requests per minute for one deployment (or, with None, for all).

        ``rpm`` defaults to Azure's ratio of 6 requests per minute per 1,000 TPM.
        """
        if rpm is None and tpm is not None:
            rpm = max(6, tpm * 6 // 1000)
        self._limits[deployment] = (tpm, rpm)
        self._windows.clear()

    def usage_totals(self) -> dict[str, dict[str, float]]:
        """Tokens and cost (USD, at the catalog's prices) billed per deployment so far."""
        totals: dict[str, dict[str, float]] = {}
        for record in self.records:
            if record.status != 200:
                continue
            entry = totals.setdefault(
                record.deployment, {"prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0}
            )
            entry["prompt_tokens"] += record.prompt_tokens
            entry["completion_tokens"] += record.completion_tokens
            entry["cost_usd"] += record.cost_usd(self.deployments[record.deployment])
        return totals

    # plumbing --------------------------------------------------------------------------------

    def _now_sim(self) -> float:
        return (time.monotonic() - self._anchor) * self.speed

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        transport = request.transport
        if transport is not None:
            self._transports.add(transport)
        request_id = str(uuid.uuid4())
        try:
            try:
                self._authenticate(request)
                if self.fault == "error":
                    raise FoundryError(
                        500,
                        {
                            "error": {
                                "code": "InternalServerError",
                                "message": (
                                    "The server had an error while processing your request. "
                                    "Sorry about that!"
                                ),
                            }
                        },
                    )
                if self.fault == "unavailable":
                    raise FoundryError(
                        503,
                        {
                            "error": {
                                "code": "ServiceUnavailable",
                                "message": (
                                    "The service is temporarily unable to process your request. "
                                    "Please try again later."
                                ),
                            }
                        },
                        {"Retry-After": "1", "retry-after-ms": "1000"},
                    )
                response = await handler(request)
            except FoundryError as err:
                response = web.Response(
                    body=_azure_json(err.body),
                    status=err.status,
                    content_type="application/json",
                    headers=err.headers,
                )
            except web.HTTPNotFound:
                response = web.Response(
                    body=_azure_json({"error": {"code": "404", "message": "Resource not found"}}),
                    status=404,
                    content_type="application/json",
                )
            if not response.prepared:
                self._stamp(request, response, request_id)
            return response
        finally:
            if transport is not None:
                self._transports.discard(transport)

    def _stamp(self, request: web.Request, response: web.StreamResponse, request_id: str) -> None:
        response.headers["apim-request-id"] = request_id
        response.headers["x-request-id"] = request_id
        response.headers["x-ms-region"] = REGION_NAMES.get(self.region, self.region)
        response.headers["x-kaitosim-engine"] = self.engine.name
        client_id = request.headers.get("x-ms-client-request-id")
        if client_id:
            response.headers["x-ms-client-request-id"] = client_id

    def _authenticate(self, request: web.Request) -> None:
        key = request.headers.get("api-key")
        auth = request.headers.get("Authorization", "")
        bearer = auth[7:].strip() if auth.lower().startswith("bearer ") else None
        offered = [k for k in (key, bearer) if k]
        if offered and (self.api_keys is None or any(k in self.api_keys for k in offered)):
            return
        raise FoundryError(401, {"error": {"code": "401", "message": MSG_401}})

    def _api_version(self, request: web.Request) -> str:
        version = request.query.get("api-version")
        if not version:
            raise FoundryError(
                400,
                {
                    "error": {
                        "code": "MissingApiVersionParameter",
                        "message": "The api-version query parameter (?api-version=) is "
                        "required for all "
                        "requests.",
                    }
                },
            )
        if version not in SUPPORTED_API_VERSIONS:
            raise FoundryError(
                400, {"error": {"code": "BadRequest", "message": "API version not supported"}}
            )
        return version

    def _deployment(self, name: str | None, surface: str) -> Deployment:
        deployment = self.deployments.get(name or "")
        if deployment is not None and (deployment.lifecycle != "retired" or self.serve_retired):
            return deployment
        if surface == "models":
            if not name:
                message = (
                    "No model specified in request. Please provide a model name in the "
                    "request body or as a x-ms-model-mesh-model-name header."
                )
                raise FoundryError(
                    400,
                    {"error": {"code": "no_model_name", "message": message, "details": message}},
                )
            message = f"Unknown model: {name}"
            raise FoundryError(
                404, {"error": {"code": "unknown_model", "message": message, "details": message}}
            )
        raise FoundryError(
            404, {"error": {"code": "DeploymentNotFound", "message": MSG_DEPLOYMENT_NOT_FOUND}}
        )

    async def _body(self, request: web.Request) -> dict[str, Any]:
        try:
            body = json.loads(await request.read() or b"null")
        except ValueError as exc:
            raise _invalid(
                "We could not parse the JSON body of your request. (HINT: This likely means you "
                "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, "
                "but what was sent was not valid JSON.)",
                None,
                None,
            ) from exc
        if not isinstance(body, dict):
            raise _invalid("Invalid type for body: expected an object.", None, "invalid_type")
        return body

    # routes ----------------------------------------------------------------------------------

    async def _v1_models(self, request: web.Request) -> web.Response:
        data = [
            self._model_card(d)
            for d in self.deployments.values()
            if d.lifecycle != "retired" or self.serve_retired
        ]
        return web.Response(
            body=_azure_json({"data": data, "object": "list"}), content_type="application/json"
        )

    async def _v1_model(self, request: web.Request) -> web.Response:
        deployment = self._deployment(request.match_info["name"], "v1")
        return web.Response(
            body=_azure_json(self._model_card(deployment)), content_type="application/json"
        )

    def _model_card(self, d: Deployment) -> dict[str, Any]:
        card: dict[str, Any] = {
            "id": d.name,
            "object": "model",
            "created": 1700000000,
            "owned_by": d.provider_name,
            "status": "succeeded",
            "lifecycle_status": "generally-available" if d.lifecycle == "ga" else "deprecated",
            "capabilities": {
                "chat_completion": True,
                "completion": False,
                "embeddings": False,
                "fine_tune": False,
                "inference": True,
            },
        }
        if d.retired_on:
            card["deprecation"] = {"inference": d.retired_on}
        return card

    async def _models_info(self, request: web.Request) -> web.Response:
        self._api_version(request)
        name = (
            request.headers.get("x-ms-model-mesh-model-name")
            or request.query.get("model")
            or self.default_deployment
        )
        deployment = self._deployment(name, "models")
        body = {
            "model_name": deployment.name,
            "model_type": "chat-completion",
            "model_provider_name": deployment.provider_name,
        }
        return web.Response(body=_azure_json(body), content_type="application/json")

    async def _v1_chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        if "model" not in body:
            raise _invalid(
                "Missing required parameter: 'model'.", "model", "missing_required_parameter"
            )
        return await self._chat(request, body, self._deployment(body.get("model"), "v1"), "v1")

    async def _deployment_chat(self, request: web.Request) -> web.StreamResponse:
        self._api_version(request)
        body = await self._body(request)
        deployment = self._deployment(request.match_info["name"], "deployments")
        return await self._chat(request, body, deployment, "deployments")

    async def _models_chat(self, request: web.Request) -> web.StreamResponse:
        self._api_version(request)
        body = await self._body(request)
        name = body.get("model") or request.headers.get("x-ms-model-mesh-model-name")
        return await self._chat(request, body, self._deployment(name, "models"), "models")

    # chat ------------------------------------------------------------------------------------

    def _validate(self, body: Mapping[str, Any], deployment: Deployment) -> SamplingParams:
        messages = body.get("messages")
        if messages is None:
            raise _invalid(
                "Missing required parameter: 'messages'.", "messages", "missing_required_parameter"
            )
        if not isinstance(messages, list) or not messages:
            raise _invalid(
                "Invalid 'messages': empty array. Expected an array with minimum length "
                "1, but got an empty array instead.",
                "messages",
                "empty_array",
            )
        for index, message in enumerate(messages):
            if not isinstance(message, dict) or "role" not in message:
                raise _invalid(
                    f"Missing required parameter: 'messages[{index}].role'.",
                    f"messages[{index}].role",
                    "missing_required_parameter",
                )
        if deployment.reasoning and deployment.is_openai and body.get("max_tokens") is not None:
            raise _invalid(
                "Unsupported parameter: 'max_tokens' is not supported with this model. "
                "Use 'max_completion_tokens' instead.",
                "max_tokens",
                "unsupported_parameter",
            )
        temperature = body.get("temperature")
        temperature = 1.0 if temperature is None else temperature
        if not isinstance(temperature, (int, float)) or not 0 <= temperature <= 2:
            raise _invalid(
                f"Invalid 'temperature': decimal above maximum value. Expected a value <= "
                f"2, but got {temperature} instead.",
                "temperature",
                "decimal_above_max_value",
            )
        top_p = body.get("top_p")
        top_p = 1.0 if top_p is None else top_p
        if not isinstance(top_p, (int, float)) or not 0 < top_p <= 1:
            raise _invalid(
                f"Invalid 'top_p': expected a value in (0, 1], got {top_p}.",
                "top_p",
                "invalid_value",
            )
        if body.get("n") not in (None, 1):
            raise _invalid("kaitosim simulates n=1 only.", "n", "invalid_value")
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
            raise _invalid(
                f"Invalid 'max_tokens': integer below minimum value. Expected a value >= "
                f"1, but got {max_tokens} instead.",
                "max_tokens",
                "integer_below_min_value",
            )
        stop = body.get("stop")
        stops = [stop] if isinstance(stop, str) else [str(s) for s in (stop or [])]
        seed = body.get("seed") if isinstance(body.get("seed"), int) else None
        return SamplingParams(
            max_tokens=int(max_tokens or 4096),
            temperature=float(temperature),
            top_p=float(top_p),
            seed=seed,
            stop=stops[:4],
        )

    def _check_content(self, messages: Sequence[Mapping[str, Any]]) -> None:
        text = "\n".join(message_text(m.get("content")) for m in messages).lower()
        hits = [cat for trigger, cat in FILTER_TRIGGERS.items() if trigger in text]
        if not hits:
            return
        result = _safe(PROMPT_CATEGORIES)
        for cat in hits:
            if cat == "jailbreak":
                result[cat] = {"filtered": True, "detected": True}
            else:
                result[cat] = {"filtered": True, "severity": "high"}
        raise FoundryError(
            400,
            {
                "error": {
                    "message": MSG_CONTENT_FILTER,
                    "type": None,
                    "param": "prompt",
                    "code": "content_filter",
                    "status": 400,
                    "innererror": {
                        "code": "ResponsibleAIPolicyViolation",
                        "content_filter_result": result,
                    },
                }
            },
        )

    def _rate_limit(self, deployment: Deployment, estimate: int) -> dict[str, str]:
        tpm, rpm = self._limits.get(deployment.name, self._limits[None])
        if tpm is None and rpm is None:
            return {}
        now = self._now_sim()
        window = self._windows.setdefault(deployment.name, _Window())
        window.trim(now)
        used = window.used_tokens()
        per10 = max(1, math.ceil(rpm / 6)) if rpm else None
        wait = 0.0
        kind = "token"
        if tpm is not None and used + estimate > tpm:
            freed = used + estimate - tpm
            acc = 0
            for stamp, n in window.tokens:
                acc += n
                if acc >= freed:
                    wait = stamp + 60.0 - now
                    break
            else:
                wait = 60.0
        if per10 is not None and len(window.requests) >= per10:
            wait = max(wait, window.requests[0] + 10.0 - now)
            kind = "call" if wait == window.requests[0] + 10.0 - now else kind
        headers: dict[str, str] = {}
        if tpm is not None:
            headers["x-ratelimit-limit-tokens"] = str(tpm)
        if rpm is not None:
            headers["x-ratelimit-limit-requests"] = str(rpm)
        if wait > 0:
            real = wait / self.speed
            headers["Retry-After"] = str(max(1, math.ceil(real)))
            headers["retry-after-ms"] = str(max(1, math.ceil(real * 1000)))
            headers["x-ratelimit-remaining-tokens"] = str(max(0, (tpm or 0) - used))
            headers["x-ratelimit-remaining-requests"] = str(
                max(0, (per10 or 0) - len(window.requests))
            )
            seconds = max(1, math.ceil(wait))
            message = (
                f"Requests to the ChatCompletions_Create Operation under Azure OpenAI API version "
                f"2024-10-21 have exceeded {kind} rate limit of your current AIServices S0 pricing "
                f"tier. Please retry after {seconds} second{'s' if seconds != 1 else ''}. Please "
                f"contact Azure support service if you would like to further increase the default "
                f"rate limit."
            )
            raise FoundryError(429, {"error": {"code": "429", "message": message}}, headers)
        window.tokens.append((now, estimate))
        window.requests.append(now)
        if tpm is not None:
            headers["x-ratelimit-remaining-tokens"] = str(max(0, tpm - used - estimate))
        if per10 is not None:
            headers["x-ratelimit-remaining-requests"] = str(max(0, per10 - len(window.requests)))
        return headers

    def _jitter(self, sigma: float) -> float:
        if not self.jitter or sigma <= 0:
            return 1.0
        return math.exp(self._rng.gauss(-sigma * sigma / 2, sigma))

    async def _chat(
        self, request: web.Request, body: dict[str, Any], deployment: Deployment, surface: str
    ) -> web.StreamResponse:
        received_at = time.perf_counter()
        params = self._validate(body, deployment)
        messages: list[dict[str, Any]] = body["messages"]
        prompt_tokens = self.engine.chat_tokens(messages)
        estimate = prompt_tokens + int(
            body.get("max_completion_tokens") or body.get("max_tokens") or 0
        )
        record = RequestRecord(
            surface=surface,
            deployment=deployment.name,
            status=429,
            prompt_tokens=prompt_tokens,
            stream=bool(body.get("stream")),
            received_at=received_at,
        )
        self.records.append(record)
        limit_headers = self._rate_limit(deployment, estimate)
        record.status = 400
        self._check_content(messages)

        effort = body.get("reasoning_effort")
        reasoning = 0
        if deployment.reasoning and deployment.is_openai and effort in REASONING_TOKENS:
            digest = hashlib.sha256(render_chat(messages).encode()).digest()
            reasoning = REASONING_TOKENS[str(effort)] + digest[0] % 64
        filter_output = OUTPUT_FILTER_TRIGGER in render_chat(messages).lower()

        mean, sigma = latency.DEPLOYMENT_TYPE_FACTOR.get(self.deployment_type, (1.0, 0.2))
        profile = latency.foundry_profile(deployment.name)
        slow = self.slow_factor if self.fault == "slow" else 1.0
        itl = mean / profile.tokens_per_s * self._jitter(sigma / 2) * slow
        ttft = (
            latency.region_rtt_seconds(self.region)
            + (profile.ttft_s + prompt_tokens * profile.prefill_s_per_token)
            * mean
            * self._jitter(sigma)
            * slow
            + reasoning * itl
        )
        record.ttft_s = ttft
        record.reasoning_tokens = reasoning
        if self.fault == "hang":
            await asyncio.sleep(3600)

        stream = self.engine.generate(render_chat(messages), params, chat=True, messages=messages)
        stop = StopChecker(params.stop)
        pieces: list[str] = []
        finish = "length"
        while len(pieces) < params.max_tokens:
            piece = stream.poll()
            if piece is None:
                if stream.finished:
                    finish = "stop"
                    break
                await asyncio.sleep(0.001)
                continue
            text, matched = stop.feed(piece)
            pieces.append(text)
            if matched is not None:
                finish = "stop"
                break
        tail = stop.flush()
        if tail:
            pieces.append(tail)
        if filter_output:
            pieces = pieces[: max(1, min(12, len(pieces) // 2))]
            finish = "content_filter"
        stream.close()
        completion_tokens = len(pieces) + reasoning
        record.completion_tokens = completion_tokens
        usage = self._usage(deployment, prompt_tokens, completion_tokens, reasoning)
        chat_id = f"chatcmpl-{uuid.uuid4().hex[:29]}"
        created = int(time.time())
        headers = {**limit_headers, "x-ms-deployment-name": deployment.name}
        if body.get("stream"):
            response = web.StreamResponse(
                status=200,
                headers={
                    **headers,
                    "Content-Type": "text/event-stream; charset=utf-8",
                    "Cache-Control": "no-cache",
                },
            )
            self._stamp(request, response, str(uuid.uuid4()))
            await response.prepare(request)
            record.status = 200
            await self._stream(
                request,
                response,
                record,
                deployment,
                surface,
                body,
                pieces,
                finish,
                usage,
                chat_id,
                created,
                ttft,
                itl,
            )
            return response
        await asyncio.sleep((ttft + len(pieces) * itl) / self.speed)
        record.status = 200
        message: dict[str, Any] = {"role": "assistant", "content": "".join(pieces)}
        choice: dict[str, Any] = {
            "index": 0,
            "finish_reason": finish,
            "logprobs": None,
            "message": message,
        }
        out: dict[str, Any] = {
            "id": chat_id,
            "object": "chat.completion",
            "created": created,
            "model": deployment.model_version,
            "choices": [choice],
            "usage": usage,
        }
        if deployment.is_openai:
            message.update({"annotations": [], "refusal": None})
            out["system_fingerprint"] = self._fingerprint(deployment)
        choice["content_filter_results"] = self._completion_filter(finish)
        out["prompt_filter_results"] = [
            {"prompt_index": 0, "content_filter_results": _safe(PROMPT_CATEGORIES)}
        ]
        return web.Response(body=_azure_json(out), content_type="application/json", headers=headers)

    def _fingerprint(self, deployment: Deployment) -> str:
        return "fp_" + hashlib.sha256(deployment.name.encode()).hexdigest()[:10]

    def _completion_filter(self, finish: str) -> dict[str, Any]:
        result = _safe(COMPLETION_CATEGORIES)
        if finish == "content_filter":
            result["violence"] = {"filtered": True, "severity": "medium"}
        return result

    def _usage(
        self, deployment: Deployment, prompt: int, completion: int, reasoning: int
    ) -> dict[str, Any]:
        usage: dict[str, Any] = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        if deployment.is_openai:
            usage["completion_tokens_details"] = {
                "accepted_prediction_tokens": 0,
                "audio_tokens": 0,
                "reasoning_tokens": reasoning,
                "rejected_prediction_tokens": 0,
            }
            usage["prompt_tokens_details"] = {"audio_tokens": 0, "cached_tokens": 0}
        return usage

    async def _stream(
        self,
        request: web.Request,
        response: web.StreamResponse,
        record: RequestRecord,
        deployment: Deployment,
        surface: str,
        body: Mapping[str, Any],
        pieces: list[str],
        finish: str,
        usage: dict[str, Any],
        chat_id: str,
        created: int,
        ttft: float,
        itl: float,
    ) -> None:
        options = body.get("stream_options") or {}
        include_usage = bool(options.get("include_usage")) or (
            surface == "models" and not deployment.is_openai
        )
        model = deployment.model_version
        base: dict[str, Any] = {
            "id": chat_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
        }
        if deployment.is_openai:
            base["system_fingerprint"] = self._fingerprint(deployment)
        start = time.monotonic()
        try:
            await response.write(
                _sse(
                    {
                        "choices": [],
                        "created": 0,
                        "id": "",
                        "model": "",
                        "object": "",
                        "prompt_filter_results": [
                            {"prompt_index": 0, "content_filter_results": _safe(PROMPT_CATEGORIES)}
                        ],
                    }
                )
            )
            await self._sleep_until(start, ttft)
            role_delta: dict[str, Any] = {"role": "assistant", "content": ""}
            if deployment.is_openai:
                role_delta["refusal"] = None
            await response.write(
                _sse(
                    {
                        **base,
                        "choices": [
                            {
                                "content_filter_results": {},
                                "delta": role_delta,
                                "finish_reason": None,
                                "index": 0,
                                "logprobs": None,
                            }
                        ],
                    }
                )
            )
            sent = 0
            batch = self.stream_batch_tokens
            filters = _safe(COMPLETION_CATEGORIES)
            while sent < len(pieces):
                elapsed = (time.monotonic() - start) * self.speed
                due_by_time = int((elapsed - ttft) / max(itl, 1e-9)) + 1
                due = min(len(pieces), max(sent + batch, due_by_time))
                if self.fault == "stream_cut":
                    # the cut comes after exactly that many tokens, even when catching up
                    due = min(due, max(self.stream_cut_after_tokens, sent + 1))
                out = bytearray()
                for text in pieces[sent:due]:
                    out += _sse(
                        {
                            **base,
                            "choices": [
                                {
                                    "content_filter_results": filters,
                                    "delta": {"content": text},
                                    "finish_reason": None,
                                    "index": 0,
                                    "logprobs": None,
                                }
                            ],
                        }
                    )
                if sent == 0:
                    record.first_token_written_at = time.perf_counter()
                sent = due
                await response.write(bytes(out))
                if self.fault == "stream_cut" and sent >= self.stream_cut_after_tokens:
                    if request.transport is not None:
                        request.transport.abort()
                    return
                if sent < len(pieces):
                    await self._sleep_until(start, ttft + (sent + batch - 1) * itl)
            final_filter = self._completion_filter(finish) if finish == "content_filter" else {}
            tail = bytearray(
                _sse(
                    {
                        **base,
                        "choices": [
                            {
                                "content_filter_results": final_filter,
                                "delta": {},
                                "finish_reason": finish,
                                "index": 0,
                                "logprobs": None,
                            }
                        ],
                    }
                )
            )
            if include_usage:
                tail += _sse({**base, "choices": [], "usage": usage})
            tail += _sse("[DONE]")
            await response.write(bytes(tail))
            await response.write_eof()
        except (ConnectionResetError, ConnectionError):
            return

    async def _sleep_until(self, start: float, sim_offset: float) -> None:
        delay = start + sim_offset / self.speed - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


async def start_foundry_server(
    host: str = "127.0.0.1",
    port: int = 0,
    api_keys: list[str] | None = None,
    *,
    speed: float = 1.0,
    region: str = "eastus",
    deployment_type: str = "global",
    tpm_limit: int | None = None,
    rpm_limit: int | None = None,
    jitter: bool = True,
    seed: int = 0,
    engine: str | None = None,
    serve_retired: bool = False,
    default_deployment: str | None = None,
    slow_factor: float = 5.0,
    stream_cut_after_tokens: int = 8,
    stream_batch_tokens: int = 1,
) -> FoundryServer:
    """Start a simulated Foundry resource in the running event loop.

    ``api_keys=None`` accepts any non-empty key (a key is still required). ``tpm_limit`` and
    ``rpm_limit`` apply to every deployment (see :meth:`FoundryServer.set_rate_limit`).
    """
    server = FoundryServer(
        host,
        port,
        api_keys,
        speed=speed,
        region=region,
        deployment_type=deployment_type,
        tpm_limit=tpm_limit,
        rpm_limit=rpm_limit,
        jitter=jitter,
        seed=seed,
        engine=engine,
        serve_retired=serve_retired,
        default_deployment=default_deployment,
        slow_factor=slow_factor,
        stream_cut_after_tokens=stream_cut_after_tokens,
        stream_batch_tokens=stream_batch_tokens,
    )
    await server.start()
    return server
