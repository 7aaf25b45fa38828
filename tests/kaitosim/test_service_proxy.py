"""The API server's service proxy: forwarding, streaming and readiness, with real clients."""

# The kubernetes client types every field Optional and returns plain objects for custom
# resources; these tests assert on those values, so mypy's None/object checks are relaxed.
# mypy: disable-error-code="union-attr,index,arg-type,operator,return-value,type-var,misc"

from __future__ import annotations

import asyncio
import ssl
import time
import uuid
from typing import Any

import httpx
import openai
import requests
from aiohttp import web
from kubernetes import client

from kaitosim.server import SimulatorHandle
from tests.kaitosim.conftest import (
    create_workspace,
    raw_request,
    wait_for_condition,
    workspace_manifest,
)


class _Backend:
    def __init__(self, url: str) -> None:
        self.url = url


async def _start_streaming_backend() -> tuple[web.AppRunner, str]:
    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(f"data: first {request.query.get('q', '')}\n\n".encode())
        await asyncio.sleep(0.6)
        await response.write(b"data: second\n\n")
        await response.write_eof()
        return response

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response(
            {
                "method": request.method,
                "path": request.path,
                "query": request.query_string,
                "body": body.decode(),
            },
            status=201,
        )

    app = web.Application()
    app.router.add_get("/stream", stream)
    app.router.add_route("*", "/echo/{tail:.*}", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return runner, f"http://127.0.0.1:{port}"


def _ready_pod_behind_service(core: client.CoreV1Api, namespace: str, name: str) -> None:
    core.create_namespaced_service(
        namespace,
        client.V1Service(
            metadata=client.V1ObjectMeta(name=name),
            spec=client.V1ServiceSpec(
                selector={"app": name}, ports=[client.V1ServicePort(port=80, target_port=8080)]
            ),
        ),
    )
    core.create_namespaced_pod(
        namespace,
        client.V1Pod(
            metadata=client.V1ObjectMeta(name=f"{name}-pod", labels={"app": name}),
            spec=client.V1PodSpec(
                containers=[client.V1Container(name="app", image="example/app:1")]
            ),
        ),
    )
    core.patch_namespaced_pod_status(
        f"{name}-pod",
        namespace,
        {"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}},
    )


def test_it_streams_proxied_responses_chunk_by_chunk(
    kaitosim_server: SimulatorHandle, core: client.CoreV1Api, namespace: str
) -> None:
    runner, url = kaitosim_server.run(_start_streaming_backend())
    try:
        _ready_pod_behind_service(core, namespace, "streamer")
        runtime = kaitosim_server.simulator.controller.runtime

        async def register() -> None:
            runtime.set_backend(namespace, "streamer-pod", _Backend(url))

        kaitosim_server.run(register())
        started = time.monotonic()
        response = requests.get(
            f"{kaitosim_server.api_url}/api/v1/namespaces/{namespace}/services/streamer:80/proxy/stream",
            params={"q": "hello"},
            headers={"Authorization": f"Bearer {kaitosim_server.admin_token}"},
            verify=str(kaitosim_server.ca_cert_path),
            stream=True,
            timeout=10,
        )
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        chunks: list[tuple[float, bytes]] = []
        for chunk in response.iter_content(chunk_size=None):
            chunks.append((time.monotonic() - started, chunk))
        assert chunks[0][1] == b"data: first hello\n\n"
        assert chunks[0][0] < 0.5, "the first event must arrive before the backend finishes"
        assert chunks[-1][0] >= 0.55
        assert b"".join(c for _, c in chunks).endswith(b"data: second\n\n")
    finally:
        kaitosim_server.run(runner.cleanup())


def test_it_forwards_method_query_and_body(
    kaitosim_server: SimulatorHandle,
    core: client.CoreV1Api,
    api_client: client.ApiClient,
    namespace: str,
) -> None:
    runner, url = kaitosim_server.run(_start_streaming_backend())
    try:
        _ready_pod_behind_service(core, namespace, "echo")
        runtime = kaitosim_server.simulator.controller.runtime

        async def register() -> None:
            runtime.set_backend(namespace, "echo-pod", _Backend(url))

        kaitosim_server.run(register())
        status, body = raw_request(
            api_client,
            "PUT",
            f"/api/v1/namespaces/{namespace}/services/echo/proxy/echo/a/b",
            {"x": 1},
            query=[("k", "v")],
        )
        assert status == 201
        assert body == {"method": "PUT", "path": "/echo/a/b", "query": "k=v", "body": '{"x": 1}'}
    finally:
        kaitosim_server.run(runner.cleanup())


def test_it_answers_503_when_no_pod_is_ready(
    custom: client.CustomObjectsApi, api_client: client.ApiClient, namespace: str
) -> None:
    create_workspace(
        custom,
        namespace,
        workspace_manifest("cold", annotations={"kaitosim.kaito.sh/fault": "image-pull"}),
    )
    wait_for_condition(custom, namespace, "cold", "ResourceReady")
    status, body = raw_request(
        api_client, "GET", f"/api/v1/namespaces/{namespace}/services/cold:80/proxy/v1/models"
    )
    assert status == 503
    assert body["reason"] == "ServiceUnavailable"
    assert body["message"] == 'no endpoints available for service "cold"'
    status, body = raw_request(
        api_client, "GET", f"/api/v1/namespaces/{namespace}/services/absent:80/proxy/v1/models"
    )
    assert status == 404


def test_it_serves_openai_chat_streams_through_the_proxy(
    kaitosim_server: SimulatorHandle, custom: client.CustomObjectsApi, namespace: str
) -> None:
    name = f"chat-{uuid.uuid4().hex[:4]}"
    create_workspace(custom, namespace, workspace_manifest(name))
    wait_for_condition(custom, namespace, name, "InferenceReady")
    http_client = httpx.Client(
        verify=ssl.create_default_context(cafile=str(kaitosim_server.ca_cert_path))
    )
    sdk = openai.OpenAI(
        base_url=f"{kaitosim_server.api_url}/api/v1/namespaces/{namespace}/services/{name}:80/proxy/v1",
        api_key=kaitosim_server.admin_token,
        http_client=http_client,
    )
    pieces: list[Any] = []
    stream = sdk.chat.completions.create(
        model="phi-4-mini-instruct",
        messages=[{"role": "user", "content": "Say hello"}],
        max_tokens=16,
        stream=True,
    )
    for chunk in stream:
        pieces.append(chunk)
    text = "".join((c.choices[0].delta.content or "") for c in pieces if c.choices)
    assert len(pieces) > 2
    assert text
    reply = sdk.chat.completions.create(
        model="phi-4-mini-instruct", messages=[{"role": "user", "content": "Hi"}], max_tokens=8
    )
    assert reply.choices[0].message.content
    http_client.close()
