"""The Kubernetes API server over HTTP (aiohttp): discovery, CRUD, watch, tables, logs and proxy."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import unquote

import aiohttp
import yaml
from aiohttp import web

from kaitosim import api_errors, discovery, tables
from kaitosim.api_errors import ApiError
from kaitosim.auth import TokenAuthority, User
from kaitosim.cluster import Cluster
from kaitosim.faults import FaultRegistry, parse_fault_list
from kaitosim.object_store import Watcher
from kaitosim.patches import APPLY_PATCH, JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH
from kaitosim.protobuf_codec import PROTOBUF_CONTENT_TYPE, ProtobufDecodeError, decode_object
from kaitosim.resource_types import ResourceType
from kaitosim.selectors import (
    FieldSelector,
    LabelSelector,
    parse_field_selector,
    parse_label_selector,
)

JSON_CONTENT_TYPE = "application/json"
TABLE_MEDIA = "as=Table"
AGGREGATED_DISCOVERY_MEDIA = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
_OPEN_PATHS = frozenset({"/version", "/healthz", "/livez", "/readyz", "/version/"})
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "host",
        "authorization",
    }
)
_VERB_FOR_METHOD = {"POST": "create", "PUT": "update", "PATCH": "patch"}


class LogView(Protocol):
    """What the kubelet offers for a container's log."""

    @property
    def lines(self) -> list[tuple[str, str]]:
        """(RFC3339Nano timestamp, line) pairs so far."""

    @property
    def finished(self) -> bool: ...

    @property
    def changed(self) -> asyncio.Event: ...


class ClusterRuntime(Protocol):
    """What the API server needs from the simulated nodes (kubelets) and services."""

    def container_log(
        self, namespace: str, pod: str, container: str, previous: bool = False
    ) -> LogView | None: ...

    def service_backend(self, namespace: str, service: dict[str, Any], port: str) -> str | None: ...

    def status(self) -> dict[str, Any]: ...


@dataclass
class ResourceRequest:
    resource_type: ResourceType
    namespace: str
    name: str
    subresource: str
    rest: str


def _json_response(
    body: Any,
    status: int = 200,
    headers: dict[str, str] | None = None,
    content_type: str = JSON_CONTENT_TYPE,
) -> web.Response:
    return web.Response(
        body=json.dumps(body, separators=(",", ":")).encode(),
        status=status,
        headers={"Content-Type": content_type, **(headers or {})},
    )


def _error_response(error: ApiError) -> web.Response:
    return _json_response(error.status(), status=error.code, headers=error.headers)


def _wants_table(request: web.Request) -> bool:
    return TABLE_MEDIA in request.headers.get("Accept", "")


def _flag(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "t", "yes")


def _warning_headers(warnings: list[str]) -> dict[str, str]:
    if not warnings:
        return {}
    return {"Warning": ", ".join(f"299 - {json.dumps(warning)}" for warning in warnings)}


class ApiServer:
    """The HTTP front of the simulated cluster."""

    def __init__(
        self,
        cluster: Cluster,
        authority: TokenAuthority,
        faults: FaultRegistry,
        crd_printer_columns: dict[tuple[str, str, str], list[dict[str, Any]]],
        crd_schemas: dict[tuple[str, str, str], dict[str, Any]],
        runtime: ClusterRuntime | None = None,
        bookmark_interval: float = 1.0,
    ) -> None:
        self.cluster = cluster
        self.registry = cluster.registry
        self.authority = authority
        self.faults = faults
        self.printer_columns = crd_printer_columns
        self.crd_schemas = crd_schemas
        self.runtime = runtime
        self.bookmark_interval = bookmark_interval
        self.server_address = "127.0.0.1:0"
        self._http: aiohttp.ClientSession | None = None
        self._open_streams: set[web.StreamResponse] = set()
        self.crd_objects: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ wiring
    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        app.on_startup.append(self._on_startup)
        app.on_cleanup.append(self._on_cleanup)
        return app

    async def _on_startup(self, _app: web.Application) -> None:
        self._http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10)
        )

    async def _on_cleanup(self, _app: web.Application) -> None:
        self.cluster.store.close_all_watches()
        if self._http is not None:
            await self._http.close()

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._route(request)
        except ApiError as error:
            return _error_response(error)
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as error:
            return _error_response(api_errors.internal_error(f"{type(error).__name__}: {error}"))

    # ----------------------------------------------------------------- routing
    async def _route(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        if path in ("/healthz", "/livez", "/readyz"):
            return web.Response(text="ok")
        if path == "/version":
            return _json_response(discovery.KUBERNETES_VERSION)
        user = self.authority.authenticate(request.headers.get("Authorization"))
        if user is None:
            raise api_errors.unauthorized()
        if path.startswith("/kaitosim"):
            return await self._admin(request, user, path)
        if path == "/api":
            if AGGREGATED_DISCOVERY_MEDIA.split(";")[1] in request.headers.get("Accept", ""):
                return _json_response(
                    discovery.aggregated_discovery(self.registry, legacy=True),
                    content_type=AGGREGATED_DISCOVERY_MEDIA,
                )
            return _json_response(discovery.api_versions(self.server_address))
        if path == "/apis":
            if AGGREGATED_DISCOVERY_MEDIA.split(";")[1] in request.headers.get("Accept", ""):
                return _json_response(
                    discovery.aggregated_discovery(self.registry, legacy=False),
                    content_type=AGGREGATED_DISCOVERY_MEDIA,
                )
            return _json_response(discovery.api_group_list(self.registry))
        if path == "/openapi/v2":
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        if path == "/openapi/v3":
            return _json_response(discovery.openapi_v3_root(self.registry, self.crd_schemas))
        if path.startswith("/openapi/v3/"):
            return self._openapi_document(path[len("/openapi/v3/") :])
        segments = [unquote(s) for s in path.strip("/").split("/")]
        if segments[0] == "api" and len(segments) >= 2:
            group, version, remainder = "", segments[1], segments[2:]
        elif segments[0] == "apis" and len(segments) >= 2:
            if len(segments) == 2:
                group_document = discovery.api_group(self.registry, segments[1])
                if group_document is None:
                    raise ApiError(
                        404, "NotFound", "the server could not find the requested resource", {}
                    )
                return _json_response(group_document)
            group, version, remainder = segments[1], segments[2], segments[3:]
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        if not remainder:
            if version not in self.registry.group_versions().get(group, []):
                raise ApiError(
                    404, "NotFound", "the server could not find the requested resource", {}
                )
            return _json_response(discovery.api_resource_list(self.registry, group, version))
        resource_request = self._parse_resource_path(group, version, remainder)
        return await self._handle_resource(request, user, resource_request)

    def _openapi_document(self, key: str) -> web.Response:
        parts = key.strip("/").split("/")
        if parts[0] == "api" and len(parts) == 2:
            group, version = "", parts[1]
        elif parts[0] == "apis" and len(parts) == 3:
            group, version = parts[1], parts[2]
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        document = discovery.openapi_v3_document(self.registry, group, version, self.crd_schemas)
        if document is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        return _json_response(document, headers={"Cache-Control": "public, immutable"})

    def _parse_resource_path(
        self, group: str, version: str, segments: list[str]
    ) -> ResourceRequest:
        namespace = ""
        if (
            len(segments) >= 3
            and segments[0] == "namespaces"
            and self.registry.lookup(group, version, segments[2]) is not None
            and self.registry.lookup(group, version, segments[2]).namespaced  # type: ignore[union-attr]
        ):
            namespace = segments[1]
            segments = segments[2:]
        resource_type = self.registry.lookup(group, version, segments[0])
        if resource_type is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        name = segments[1] if len(segments) > 1 else ""
        subresource = segments[2] if len(segments) > 2 else ""
        rest = "/".join(segments[3:])
        if subresource and subresource not in resource_type.subresources:
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        return ResourceRequest(resource_type, namespace, name, subresource, rest)

    # ------------------------------------------------------------- resources
    def _verb(self, request: web.Request, resource_request: ResourceRequest) -> str:
        method = request.method
        if method == "GET":
            if resource_request.name:
                return "get"
            return "watch" if _flag(request.query.get("watch")) else "list"
        if method == "DELETE":
            return "delete" if resource_request.name else "deletecollection"
        if method in _VERB_FOR_METHOD:
            return _VERB_FOR_METHOD[method]
        raise api_errors.method_not_allowed()

    async def _handle_resource(
        self, request: web.Request, user: User, resource_request: ResourceRequest
    ) -> web.StreamResponse:
        resource_type = resource_request.resource_type
        subresource = resource_request.subresource
        if subresource == "proxy":
            verb = {
                "GET": "get",
                "POST": "create",
                "PUT": "update",
                "PATCH": "patch",
                "DELETE": "delete",
            }.get(request.method, "get")
        elif subresource == "log":
            verb = "get"
        else:
            verb = self._verb(request, resource_request)
        decision = self.authority.authorize(
            user, verb, resource_type.group, resource_type.plural, subresource
        )
        if not decision.allowed:
            raise api_errors.forbidden(
                user.name,
                verb,
                resource_type.group,
                resource_type.plural,
                resource_request.namespace or None,
                resource_request.name or None,
                subresource,
            )
        if verb not in resource_type.verbs and not subresource:
            raise api_errors.method_not_allowed()
        if (
            resource_type.namespaced
            and not resource_request.namespace
            and verb not in ("list", "watch")
        ):
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        self._maybe_inject_500(resource_request)
        if subresource == "proxy":
            return await self._proxy(request, resource_request)
        if subresource == "log":
            return await self._pod_log(request, resource_request)
        if resource_type.plural == "selfsubjectaccessreviews":
            return await self._access_review(request, user)
        handlers: dict[
            str, Callable[[web.Request, ResourceRequest], Awaitable[web.StreamResponse]]
        ] = {
            "get": self._get,
            "list": self._list,
            "watch": self._watch,
            "create": self._create,
            "update": self._update,
            "patch": self._patch,
            "delete": self._delete,
            "deletecollection": self._delete_collection,
        }
        response = await handlers[verb](request, resource_request)
        dropped = verb != "watch" and self.faults.should_drop_connection(request.method)
        if dropped and request.transport is not None:  # api-drop: done, but never answered
            request.transport.abort()
        return response

    def _maybe_inject_500(self, resource_request: ResourceRequest) -> None:
        workspace = None
        if resource_request.resource_type.group == "kaito.sh" and resource_request.name:
            workspace = self.cluster.find(
                resource_request.resource_type, resource_request.namespace, resource_request.name
            )
        if self.faults.should_fail_request(workspace):
            raise api_errors.internal_error(
                "kaitosim injected fault api-500: etcdserver: request timed out"
            )

    def _selectors(
        self, request: web.Request, resource_type: ResourceType
    ) -> tuple[LabelSelector, FieldSelector]:
        label_selector = parse_label_selector(request.query.get("labelSelector"))
        field_selector = parse_field_selector(
            request.query.get("fieldSelector"), resource_type.supported_field_selectors()
        )
        return label_selector, field_selector

    def _respond_object(
        self,
        request: web.Request,
        resource_type: ResourceType,
        obj: dict[str, Any],
        status: int = 200,
        warnings: list[str] | None = None,
    ) -> web.Response:
        if _wants_table(request):
            table = tables.to_table(
                resource_type,
                [obj],
                obj["metadata"].get("resourceVersion", ""),
                self.printer_columns.get(
                    (resource_type.group, resource_type.version, resource_type.plural)
                ),
                request.query.get("includeObject", "Metadata"),
            )
            return _json_response(table, status=status, headers=_warning_headers(warnings or []))
        return _json_response(obj, status=status, headers=_warning_headers(warnings or []))

    async def _get(self, request: web.Request, rr: ResourceRequest) -> web.StreamResponse:
        obj = self.cluster.get(rr.resource_type, rr.namespace, rr.name)
        if rr.subresource == "status" or not rr.subresource:
            return self._respond_object(request, rr.resource_type, obj)
        raise api_errors.method_not_allowed()

    async def _list(self, request: web.Request, rr: ResourceRequest) -> web.StreamResponse:
        resource_type = rr.resource_type
        label_selector, field_selector = self._selectors(request, resource_type)
        items, version = self.cluster.list(
            resource_type, rr.namespace or None, label_selector, field_selector
        )
        if _wants_table(request):
            return _json_response(
                tables.to_table(
                    resource_type,
                    items,
                    version,
                    self.printer_columns.get(
                        (resource_type.group, resource_type.version, resource_type.plural)
                    ),
                    request.query.get("includeObject", "Metadata"),
                )
            )
        if not resource_type.custom:
            for item in items:
                item.pop("apiVersion", None)
                item.pop("kind", None)
        return _json_response(
            {
                "kind": resource_type.list_kind,
                "apiVersion": resource_type.group_version,
                "metadata": {"resourceVersion": str(version)},
                "items": items,
            }
        )

    async def _read_body(self, request: web.Request) -> Any:
        raw = await request.read()
        if not raw:
            raise api_errors.bad_request("the request body is empty")
        content_type = request.headers.get("Content-Type", JSON_CONTENT_TYPE).split(";")[0].strip()
        if content_type == PROTOBUF_CONTENT_TYPE:
            try:
                return decode_object(raw)
            except ProtobufDecodeError as error:
                raise api_errors.unsupported_media_type(
                    content_type, [JSON_CONTENT_TYPE, "application/yaml"]
                ) from error
        try:
            if content_type == APPLY_PATCH or "yaml" in content_type:
                return yaml.safe_load(raw.decode())
            return json.loads(raw)
        except (ValueError, yaml.YAMLError) as error:
            raise api_errors.bad_request(
                f"the request body could not be decoded: {error}"
            ) from None

    @staticmethod
    def _dry_run(request: web.Request, body: dict[str, Any] | None = None) -> bool:
        values = request.query.getall("dryRun", [])
        if body and isinstance(body.get("dryRun"), list):
            values = values + body["dryRun"]
        for value in values:
            if value != "All":
                raise api_errors.bad_request(
                    f'Invalid dry run value: "{value}": supported values: "All"'
                )
        return bool(values)

    @staticmethod
    def _field_validation(request: web.Request) -> str:
        value = request.query.get("fieldValidation", "Warn") or "Warn"
        if value not in ("Strict", "Warn", "Ignore"):
            raise api_errors.bad_request(
                f"fieldValidation must be one of Strict, Warn, Ignore; got {value}"
            )
        return value

    async def _create(self, request: web.Request, rr: ResourceRequest) -> web.StreamResponse:
        if rr.name and not rr.subresource:
            raise api_errors.method_not_allowed()
        body = await self._read_body(request)
        result = self.cluster.create(
            rr.resource_type,
            rr.namespace,
            body,
            dry_run=self._dry_run(request),
            field_validation=self._field_validation(request),
        )
        return self._respond_object(request, rr.resource_type, result.obj, 201, result.warnings)

    async def _update(self, request: web.Request, rr: ResourceRequest) -> web.StreamResponse:
        body = await self._read_body(request)
        result = self.cluster.update(
            rr.resource_type,
            rr.namespace,
            rr.name,
            body,
            subresource=rr.subresource,
            dry_run=self._dry_run(request),
            field_validation=self._field_validation(request),
        )
        return self._respond_object(request, rr.resource_type, result.obj, 200, result.warnings)

    async def _patch(self, request: web.Request, rr: ResourceRequest) -> web.StreamResponse:
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip()
        if content_type not in (MERGE_PATCH, JSON_PATCH, STRATEGIC_MERGE_PATCH, APPLY_PATCH):
            accepted = [JSON_PATCH, MERGE_PATCH, APPLY_PATCH]
            if not rr.resource_type.custom:
                accepted.append(STRATEGIC_MERGE_PATCH)
            raise api_errors.unsupported_media_type(content_type, accepted)
        if content_type == APPLY_PATCH and not request.query.get("fieldManager"):
            raise api_errors.bad_request(
                "PATCH, application/apply-patch+yaml requires fieldManager to be set"
            )
        body = await self._read_body(request)
        result = self.cluster.patch(
            rr.resource_type,
            rr.namespace,
            rr.name,
            content_type,
            body,
            subresource=rr.subresource,
            dry_run=self._dry_run(request),
            field_validation=self._field_validation(request),
        )
        return self._respond_object(
            request, rr.resource_type, result.obj, 201 if result.created else 200, result.warnings
        )

    async def _delete_options(self, request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        if not raw:
            return {}
        if request.headers.get("Content-Type", "").startswith(PROTOBUF_CONTENT_TYPE):
            try:
                return decode_object(raw)
            except ProtobufDecodeError:
                return {}
        try:
            options = json.loads(raw)
        except ValueError:
            raise api_errors.bad_request("the DeleteOptions could not be decoded") from None
        return options if isinstance(options, dict) else {}

    async def _delete(self, request: web.Request, rr: ResourceRequest) -> web.StreamResponse:
        options = await self._delete_options(request)
        preconditions = options.get("preconditions") or {}
        obj, gone = self.cluster.delete(
            rr.resource_type,
            rr.namespace,
            rr.name,
            dry_run=self._dry_run(request, options),
            precondition_uid=preconditions.get("uid"),
            precondition_resource_version=preconditions.get("resourceVersion"),
        )
        if gone and not rr.resource_type.returns_deleted_object:
            details: dict[str, Any] = {
                "name": rr.name,
                "kind": rr.resource_type.plural,
                "uid": obj["metadata"].get("uid"),
            }
            if rr.resource_type.group:
                details["group"] = rr.resource_type.group
            return _json_response(
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Success",
                    "details": details,
                }
            )
        return self._respond_object(request, rr.resource_type, obj, 200)

    async def _delete_collection(
        self, request: web.Request, rr: ResourceRequest
    ) -> web.StreamResponse:
        label_selector, field_selector = self._selectors(request, rr.resource_type)
        items, _ = self.cluster.list(
            rr.resource_type, rr.namespace or None, label_selector, field_selector
        )
        dry_run = self._dry_run(request)
        deleted = []
        for item in items:
            metadata = item["metadata"]
            with contextlib.suppress(ApiError):
                obj, _gone = self.cluster.delete(
                    rr.resource_type,
                    metadata.get("namespace", ""),
                    metadata["name"],
                    dry_run=dry_run,
                )
                deleted.append(obj)
        return _json_response(
            {
                "kind": rr.resource_type.list_kind,
                "apiVersion": rr.resource_type.group_version,
                "metadata": {"resourceVersion": str(self.cluster.store.resource_version)},
                "items": deleted,
            }
        )

    # ------------------------------------------------------------------- watch
    def _watch_object(
        self, request: web.Request, resource_type: ResourceType, obj: dict[str, Any]
    ) -> dict[str, Any]:
        if _wants_table(request):
            return tables.to_table(
                resource_type,
                [obj],
                obj["metadata"].get("resourceVersion", ""),
                self.printer_columns.get(
                    (resource_type.group, resource_type.version, resource_type.plural)
                ),
                request.query.get("includeObject", "Metadata"),
            )
        return obj

    async def _watch(self, request: web.Request, rr: ResourceRequest) -> web.StreamResponse:
        resource_type = rr.resource_type
        label_selector, field_selector = self._selectors(request, resource_type)
        namespace = rr.namespace or None
        if rr.name:
            field_selector = FieldSelector(field_selector.requirements)
        requested_version = request.query.get("resourceVersion", "")
        send_initial = _flag(request.query.get("sendInitialEvents"))
        allow_bookmarks = _flag(request.query.get("allowWatchBookmarks"))
        timeout_text = request.query.get("timeoutSeconds")
        timeout = float(timeout_text) if timeout_text else 1800.0
        store = self.cluster.store
        initial: list[dict[str, Any]] = []
        error_event: dict[str, Any] | None = None
        watcher: Watcher | None = None
        if requested_version in ("", "0") or send_initial:
            initial, _ = self.cluster.list(resource_type, namespace, label_selector, field_selector)
            watcher = store.watch(
                resource_type.bucket,
                namespace if resource_type.namespaced else None,
                label_selector,
                field_selector,
                None,
            )
        else:
            try:
                since = int(requested_version)
            except ValueError:
                raise api_errors.bad_request(
                    f"invalid resource version: {requested_version}"
                ) from None
            try:
                watcher = store.watch(
                    resource_type.bucket,
                    namespace if resource_type.namespaced else None,
                    label_selector,
                    field_selector,
                    since,
                )
            except ApiError as error:
                error_event = {"type": "ERROR", "object": error.status()}
        response = web.StreamResponse(
            status=200,
            headers={"Content-Type": JSON_CONTENT_TYPE, "Cache-Control": "no-cache, private"},
        )
        response.enable_chunked_encoding()
        await response.prepare(request)
        self._open_streams.add(response)
        try:
            if error_event is not None or watcher is None:
                await response.write((json.dumps(error_event) + "\n").encode())
                return response
            await self._stream_watch(
                request,
                response,
                resource_type,
                watcher,
                initial,
                send_initial,
                allow_bookmarks,
                timeout,
            )
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self._open_streams.discard(response)
            if watcher is not None:
                store.stop_watch(watcher)
        return response

    async def _stream_watch(
        self,
        request: web.Request,
        response: web.StreamResponse,
        resource_type: ResourceType,
        watcher: Watcher,
        initial: list[dict[str, Any]],
        send_initial: bool,
        allow_bookmarks: bool,
        timeout: float,
    ) -> None:
        store = self.cluster.store
        deadline = time.monotonic() + timeout
        drop_at = time.monotonic() + 0.5 if self.faults.watch_drop() else None

        async def emit(event_type: str, obj: dict[str, Any]) -> None:
            line = json.dumps({"type": event_type, "object": obj}, separators=(",", ":")) + "\n"
            await response.write(line.encode())

        for obj in initial:
            await emit("ADDED", self._watch_object(request, resource_type, obj))
        if send_initial and allow_bookmarks:
            await emit(
                "BOOKMARK",
                {
                    "kind": resource_type.kind,
                    "apiVersion": resource_type.group_version,
                    "metadata": {
                        "resourceVersion": str(store.resource_version),
                        "annotations": {"k8s.io/initial-events-end": "true"},
                    },
                },
            )
        while True:
            now = time.monotonic()
            remaining = deadline - now
            if remaining <= 0:
                return
            if drop_at is not None and now >= drop_at:
                transport = request.transport
                if transport is not None:
                    transport.abort()
                return
            wait = min(remaining, self.bookmark_interval)
            if drop_at is not None:
                wait = min(wait, max(0.01, drop_at - now))
            try:
                item = await asyncio.wait_for(watcher.queue.get(), timeout=wait)
            except TimeoutError:
                if allow_bookmarks and time.monotonic() < deadline:
                    await emit(
                        "BOOKMARK",
                        {
                            "kind": resource_type.kind,
                            "apiVersion": resource_type.group_version,
                            "metadata": {"resourceVersion": str(store.resource_version)},
                        },
                    )
                continue
            if item is None:
                return
            event_type, obj, _version = item
            presented = self.cluster._present(resource_type, obj)
            await emit(event_type, self._watch_object(request, resource_type, presented))

    def shutdown_streams(self) -> None:
        self.cluster.store.close_all_watches()

    # -------------------------------------------------------------------- logs
    async def _pod_log(self, request: web.Request, rr: ResourceRequest) -> web.StreamResponse:
        pod = self.cluster.get(rr.resource_type, rr.namespace, rr.name)
        containers = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
        container = request.query.get("container") or ""
        if not container:
            if len(containers) != 1:
                raise api_errors.bad_request(
                    f"a container name must be specified for pod {rr.name}, "
                    f"choose one of: [{' '.join(containers)}]"
                )
            container = containers[0]
        if container not in containers:
            raise api_errors.bad_request(f"container {container} is not valid for pod {rr.name}")
        previous = _flag(request.query.get("previous"))
        view = (
            self.runtime.container_log(rr.namespace, rr.name, container, previous)
            if self.runtime
            else None
        )
        if previous and view is None:
            raise api_errors.bad_request(
                f'previous terminated container "{container}" in pod "{rr.name}" not found'
            )
        if view is None or not view.lines:
            reason = "ContainerCreating"
            for status in (pod.get("status") or {}).get("containerStatuses") or []:
                waiting = (status.get("state") or {}).get("waiting")
                if status.get("name") == container and waiting:
                    reason = waiting.get("reason", reason)
            if reason in ("ErrImagePull", "ImagePullBackOff"):
                raise api_errors.bad_request(
                    f'container "{container}" in pod "{rr.name}" is waiting to start: '
                    "trying and failing to pull image"
                )
            raise api_errors.bad_request(
                f'container "{container}" in pod "{rr.name}" is waiting to start: {reason}'
            )
        tail_text = request.query.get("tailLines")
        timestamps = _flag(request.query.get("timestamps"))
        follow = _flag(request.query.get("follow"))

        def render(entries: list[tuple[str, str]]) -> bytes:
            return "".join(
                f"{ts} {line}\n" if timestamps else f"{line}\n" for ts, line in entries
            ).encode()

        entries = list(view.lines)
        if tail_text:
            tail = max(0, int(tail_text))
            entries = entries[-tail:] if tail else []
        if not follow:
            return web.Response(body=render(entries), content_type="text/plain", charset="utf-8")
        response = web.StreamResponse(
            status=200, headers={"Content-Type": "text/plain; charset=utf-8"}
        )
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(render(entries))
        seen = len(view.lines)
        try:
            while True:
                if len(view.lines) > seen:
                    await response.write(render(view.lines[seen:]))
                    seen = len(view.lines)
                    continue
                if view.finished:
                    break
                view.changed.clear()
                if len(view.lines) > seen:
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(view.changed.wait(), timeout=1.0)
                if self.cluster.find(rr.resource_type, rr.namespace, rr.name) is None:
                    break
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return response

    # ------------------------------------------------------------------- proxy
    async def _proxy(self, request: web.Request, rr: ResourceRequest) -> web.StreamResponse:
        if rr.resource_type.plural != "services":
            raise api_errors.method_not_allowed()
        name, _, port = rr.name.partition(":")
        if name in ("http", "https") and port:
            name, _, port = port.partition(":")
        service = self.cluster.get(rr.resource_type, rr.namespace, name)
        backend = (
            self.runtime.service_backend(rr.namespace, service, port) if self.runtime else None
        )
        if backend is None:
            raise api_errors.service_unavailable(f'no endpoints available for service "{name}"')
        target = backend.rstrip("/") + "/" + rr.rest
        if request.query_string:
            target += "?" + request.query_string
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        body = await request.read()
        assert self._http is not None
        try:
            upstream = await self._http.request(
                request.method, target, headers=headers, data=body or None, allow_redirects=False
            )
        except aiohttp.ClientError as error:
            raise ApiError(
                503, "ServiceUnavailable", f"error trying to reach service: {error}"
            ) from None
        async with upstream:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for key, value in upstream.headers.items():
                if key.lower() not in _HOP_BY_HOP and key.lower() != "content-encoding":
                    response.headers[key] = value
            response.enable_chunked_encoding()
            await response.prepare(request)
            try:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
            except (ConnectionResetError, aiohttp.ClientPayloadError):
                pass
            await response.write_eof()
        return response

    # ---------------------------------------------------------------- authz API
    async def _access_review(self, request: web.Request, user: User) -> web.StreamResponse:
        if request.method != "POST":
            raise api_errors.method_not_allowed()
        body = await self._read_body(request)
        spec = (body or {}).get("spec") or {}
        attributes = spec.get("resourceAttributes")
        if attributes:
            decision = self.authority.authorize(
                user,
                str(attributes.get("verb", "")),
                str(attributes.get("group", "")),
                str(attributes.get("resource", "")),
                str(attributes.get("subresource", "")),
            )
        elif spec.get("nonResourceAttributes"):
            decision = self.authority.authorize(user, "get", "", "nonresource")
            decision = type(decision)(True, decision.reason) if user.is_admin else decision
        else:
            raise api_errors.invalid(
                "authorization.k8s.io",
                "SelfSubjectAccessReview",
                "",
                [
                    api_errors.FieldCause(
                        "FieldValueRequired",
                        "Required value: exactly one of nonResourceAttributes or "
                        "resourceAttributes must be specified",
                        "spec.resourceAttributes",
                    )
                ],
            )
        status: dict[str, Any] = {"allowed": decision.allowed}
        if decision.reason:
            status["reason"] = decision.reason
        return _json_response(
            {
                "kind": "SelfSubjectAccessReview",
                "apiVersion": "authorization.k8s.io/v1",
                "metadata": {"creationTimestamp": None},
                "spec": spec,
                "status": status,
            },
            status=201,
        )

    # ------------------------------------------------------------------- admin
    async def _admin(self, request: web.Request, user: User, path: str) -> web.StreamResponse:
        if not user.is_admin:
            raise ApiError(
                403, "Forbidden", f'User "{user.name}" cannot use the kaitosim admin API', {}
            )
        if path == "/kaitosim/faults":
            if request.method == "GET":
                return _json_response({"faults": sorted(self.faults.global_faults)})
            if request.method == "DELETE":
                self.faults.clear()
                return _json_response({"faults": []})
            if request.method in ("POST", "PUT"):
                body = await self._read_body(request)
                names: list[str] = []
                if isinstance(body, dict):
                    if isinstance(body.get("faults"), list):
                        names.extend(str(n) for n in body["faults"])
                    if body.get("fault"):
                        names.append(str(body["fault"]))
                try:
                    parsed = parse_fault_list(",".join(names))
                except ValueError as error:
                    raise api_errors.bad_request(str(error)) from None
                if request.method == "PUT" or (isinstance(body, dict) and body.get("replace")):
                    self.faults.set_global(parsed)
                else:
                    self.faults.add_global(parsed)
                return _json_response({"faults": sorted(self.faults.global_faults)})
            raise api_errors.method_not_allowed()
        if path == "/kaitosim/compact" and request.method == "POST":
            revision = self.cluster.store.compact()
            return _json_response({"compactedResourceVersion": str(revision)})
        if path == "/kaitosim/status" and request.method == "GET":
            status = self.runtime.status() if self.runtime else {}
            status["resourceVersion"] = str(self.cluster.store.resource_version)
            status["watches"] = self.cluster.store.watcher_count()
            status["faults"] = sorted(self.faults.global_faults)
            return _json_response(status)
        raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
