"""The Kubernetes API server of a cluster: the only module that imports `kubernetes`.

Everything here speaks plain dicts (manifests as `kubectl get -o json` shows them) and raises our
own errors, so the rest of the app never sees an `ApiException` or a urllib3 error:

    ClusterUnreachable   no answer (DNS, refused, timeout, TLS)          transient: retry
    ServerError          5xx or 429 from the API server                  transient: retry
    Unauthorized         401: the credentials are wrong or expired
    Forbidden            403: RBAC does not allow it
    NotFound             404
    Conflict             409 (AlreadyExists on create, or a stale resourceVersion)
    Invalid              422 Invalid, or 400 (an admission webhook such as KAITO's denied it)
    KubeconfigInvalid    the stored kubeconfig cannot be read or has no such context
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import quote

import urllib3
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from kaitoweb.redaction import redact, yaml_error_text

KAITO_GROUP = "kaito.sh"
KAITO_VERSION = "v1beta1"
WORKSPACES = "workspaces"
KARPENTER_GROUP = "karpenter.sh"
KARPENTER_VERSION = "v1"
NODECLAIMS = "nodeclaims"
DRY_RUN = "All"
FIELD_MANAGER = "kaitoweb"

# (connect, read) seconds: a cluster that does not answer must not hold a worker or a page.
DEFAULT_TIMEOUT = (5.0, 30.0)
# Reads are idempotent: a 5xx or 429 is retried here after 0.1 s, then 0.3 s. Writes are not;
# the Celery task that makes them retries with its own, longer backoff.
READ_RETRIES = 2
READ_BACKOFF = 0.1


@dataclass(frozen=True)
class Permission:
    """What RBAC must allow for the calls this module makes. ``cluster_wide``: needed across all
    namespaces (a cluster-scoped kind, or a list over every namespace); otherwise needed in each
    namespace kaitoweb deploys to (and events in ``default``, where node events are)."""

    group: str
    resource: str  # with its subresource: "pods/log", "services/proxy"
    verbs: tuple[str, ...]
    cluster_wide: bool
    why: str


# Exactly what the methods of `Kube` and `proxy_http_settings` ask the API server for. The
# Kubernetes manifests' ClusterRoles (deploy/kubernetes/base/rbac.yaml) grant this and no more, a
# test checks that they match, and another that the app's calls stay within it. Discovery,
# /version and SelfSubjectAccessReviews are allowed to every authenticated user by default.
REQUIRED_PERMISSIONS: tuple[Permission, ...] = (
    Permission("", "namespaces", ("create", "get"), True, "launch into a new namespace"),
    Permission("", "nodes", ("list",), True, "the GPU nodes a workspace runs on"),
    Permission(KARPENTER_GROUP, NODECLAIMS, ("list",), True, "node provisioning, left-over nodes"),
    Permission(KAITO_GROUP, WORKSPACES, ("list",), True, "find workspaces made elsewhere"),
    Permission(KAITO_GROUP, WORKSPACES, ("create", "delete", "get", "patch"), False, "deploy"),
    Permission("", "configmaps", ("create", "delete", "get", "list", "update"), False, "config"),
    Permission("", "secrets", ("create", "delete", "get", "list", "update"), False, "HF token"),
    Permission("", "services", ("get",), False, "the inference endpoint"),
    Permission("", "services/proxy", ("create",), False, "chat and A/B through the proxy"),
    Permission("", "pods", ("list",), False, "the workspace's pods"),
    Permission("", "pods/log", ("get",), False, "the pod log"),
    Permission("", "events", ("list",), False, "what KAITO and the nodes report"),
)


class KubeError(Exception):
    """Something the cluster (or the way to it) said no to, in plain words."""

    status: int = 0
    transient = False

    def __init__(self, message: str, *, status: int | None = None, reason: str = "") -> None:
        message = redact(message)  # a server may echo a token or key back in its error
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.reason = reason


class TransientError(KubeError):
    """Worth retrying with backoff: the cluster may answer in a moment."""

    transient = True


class ClusterUnreachable(TransientError):
    pass


class ServerError(TransientError):
    pass


class KubeconfigInvalid(KubeError):
    pass


class Unauthorized(KubeError):
    status = 401


class Forbidden(KubeError):
    status = 403


class NotFound(KubeError):
    status = 404


class Conflict(KubeError):
    status = 409

    @property
    def already_exists(self) -> bool:
        return self.reason == "AlreadyExists"


class Invalid(KubeError):
    """422 Invalid, or 400 BadRequest (admission webhooks answer 400): the object is refused."""

    status = 422


def _error_from_api_exception(exc: ApiException) -> KubeError:
    status = int(exc.status or 0)
    body: dict[str, Any] = {}
    if exc.body:
        try:
            parsed = json.loads(exc.body)
            body = parsed if isinstance(parsed, dict) else {}
        except (TypeError, ValueError):
            body = {}
    message = str(body.get("message") or exc.reason or "").strip()
    reason = str(body.get("reason") or "")
    if status == 0:
        return ClusterUnreachable(f"cannot reach the API server: {message or exc}")
    if status == 401:
        return Unauthorized(
            "the API server rejected the credentials (401 Unauthorized): the token or "
            "certificate in the kubeconfig is wrong or has expired",
            reason=reason,
        )
    if status == 403:
        return Forbidden(message or "forbidden (403)", reason=reason)
    if status == 404:
        return NotFound(message or "not found (404)", reason=reason)
    if status == 409:
        return Conflict(message or "conflict (409)", reason=reason)
    if status in (400, 422):
        return Invalid(
            message or f"the cluster refused the object ({status})", status=status, reason=reason
        )
    if status == 429 or status >= 500:
        return ServerError(
            f"the API server answered {status}: {message or exc.reason}",
            status=status,
            reason=reason,
        )
    return KubeError(message or f"unexpected answer {status}", status=status, reason=reason)


def translate(exc: BaseException) -> KubeError:
    """Our error for whatever the kubernetes client or urllib3 raised."""
    if isinstance(exc, KubeError):
        return exc
    if isinstance(exc, ApiException):
        return _error_from_api_exception(exc)
    if isinstance(exc, ConfigException):
        return KubeconfigInvalid(f"the kubeconfig cannot be used: {exc}")
    if isinstance(exc, urllib3.exceptions.HTTPError | OSError):
        detail = str(getattr(exc, "reason", None) or exc)
        return ClusterUnreachable(f"cannot reach the API server: {detail}")
    raise exc


@dataclass(frozen=True)
class Credentials:
    """How to reach a cluster: a kubeconfig and a context, or the pod's service account."""

    kubeconfig: str = ""
    context: str = ""
    in_cluster: bool = False


def kubeconfig_contexts(text: str) -> tuple[list[str], str]:
    """The context names of a kubeconfig and its current context; KubeconfigInvalid if bad."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise KubeconfigInvalid(
            f"the kubeconfig is not valid YAML: {yaml_error_text(exc)}"
        ) from None
    if not isinstance(document, dict) or not isinstance(document.get("contexts"), list):
        raise KubeconfigInvalid("the kubeconfig has no contexts")
    names = [
        str(c.get("name")) for c in document["contexts"] if isinstance(c, dict) and c.get("name")
    ]
    if not names:
        raise KubeconfigInvalid("the kubeconfig has no contexts")
    return names, str(document.get("current-context") or "")


def kubeconfig_server(text: str, context: str) -> str:
    """The API server URL the context points at ("" if it cannot be told)."""
    try:
        document = yaml.safe_load(text) or {}
        ctx = next(c for c in document["contexts"] if c.get("name") == context)
        cluster_name = ctx["context"]["cluster"]
        entry = next(c for c in document["clusters"] if c.get("name") == cluster_name)
        return str(entry["cluster"]["server"])
    except (yaml.YAMLError, KeyError, StopIteration, TypeError, AttributeError):
        return ""


def _configuration(credentials: Credentials) -> client.Configuration:
    configuration = client.Configuration()
    try:
        if credentials.in_cluster:
            config.load_incluster_config(client_configuration=configuration)
        else:
            document = yaml.safe_load(credentials.kubeconfig)
            config.load_kube_config_from_dict(
                document,
                context=credentials.context or None,
                client_configuration=configuration,
                persist_config=False,
            )
    except (ConfigException, yaml.YAMLError, TypeError, KeyError) as exc:
        raise KubeconfigInvalid(f"the kubeconfig cannot be used: {exc}") from None
    return configuration


def _api_client(credentials: Credentials) -> client.ApiClient:
    configuration = _configuration(credentials)
    configuration.retries = 1  # fail fast; our callers retry with backoff
    return client.ApiClient(configuration=configuration)


KIND_PATHS: dict[str, tuple[str, str, bool]] = {
    # kind: (api prefix, plural, namespaced)
    "Namespace": ("/api/v1", "namespaces", False),
    "ConfigMap": ("/api/v1", "configmaps", True),
    "Secret": ("/api/v1", "secrets", True),
    "Workspace": (f"/apis/{KAITO_GROUP}/{KAITO_VERSION}", WORKSPACES, True),
}


class Kube:
    """A connection to one cluster's API server. Use as a context manager."""

    def __init__(
        self, credentials: Credentials, *, timeout: tuple[float, float] = DEFAULT_TIMEOUT
    ) -> None:
        self.timeout = timeout
        self._api = _api_client(credentials)
        self.host = str(self._api.configuration.host)
        self.core = client.CoreV1Api(self._api)
        self.custom = client.CustomObjectsApi(self._api)

    def __enter__(self) -> Kube:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._api.close()

    def _plain(self, obj: Any) -> Any:
        return self._api.sanitize_for_serialization(obj)

    def _read(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A read through the generated client; 5xx and 429 are retried a few times."""
        for attempt in range(READ_RETRIES + 1):
            try:
                return method(*args, _request_timeout=self.timeout, **kwargs)
            except Exception as exc:
                error = translate(exc)
                if not isinstance(error, ServerError) or attempt == READ_RETRIES:
                    raise error from None
            time.sleep(READ_BACKOFF * (3**attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """A JSON request to the API server with our auth and TLS; GETs are retried on 5xx."""
        attempts = READ_RETRIES + 1 if method == "GET" else 1
        for attempt in range(attempts):
            try:
                return self._call_once(method, path, **kwargs)
            except ServerError:
                if attempt == attempts - 1:
                    raise
            time.sleep(READ_BACKOFF * (3**attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    def _call_once(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
    ) -> dict[str, Any]:
        """A JSON request to the API server with our auth and TLS; the parsed answer."""
        try:
            request = self._api.param_serialize(
                method=method,
                resource_path=path,
                query_params=query or [],
                header_params={"Accept": "application/json", "Content-Type": "application/json"},
                body=body,
                auth_settings=["BearerToken"],
            )
            response = self._api.call_api(*request, _request_timeout=self.timeout)
            data = response.read()
        except Exception as exc:
            raise translate(exc) from None
        if not 200 <= response.status <= 299:
            raise _error_from_api_exception(
                ApiException(
                    status=response.status,
                    reason=response.reason,
                    body=data.decode("utf-8", "replace") if data else None,
                )
            )
        return cast(dict[str, Any], json.loads(data)) if data else {}

    # --------------------------------------------------------------- discovery
    def server_version(self) -> str:
        info = self._call("GET", "/version")
        return str(info.get("gitVersion") or "unknown")

    def workspaces_discoverable(self) -> bool:
        """Whether kaito.sh/v1beta1 serves workspaces (KAITO's CRD is installed)."""
        try:
            found = self._call("GET", f"/apis/{KAITO_GROUP}/{KAITO_VERSION}")
        except NotFound:
            return False
        return any(r.get("name") == WORKSPACES for r in found.get("resources") or [])

    def can_i(
        self,
        verb: str,
        resource: str,
        *,
        group: str = "",
        namespace: str = "",
        subresource: str = "",
    ) -> tuple[bool, str]:
        """A SelfSubjectAccessReview: (allowed, the authorizer's reason)."""
        attributes = {"verb": verb, "group": group, "resource": resource}
        if namespace:
            attributes["namespace"] = namespace
        if subresource:
            attributes["subresource"] = subresource
        review = self._call(
            "POST",
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            body={
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SelfSubjectAccessReview",
                "spec": {"resourceAttributes": attributes},
            },
        )
        status = review.get("status") or {}
        return bool(status.get("allowed")), str(status.get("reason") or "")

    # ------------------------------------------------------------------ objects
    def _object_path(self, kind: str, namespace: str, name: str = "") -> str:
        try:
            prefix, plural, namespaced = KIND_PATHS[kind]
        except KeyError:
            raise Invalid(f"kaitoweb does not apply objects of kind {kind}") from None
        path = (
            f"{prefix}/namespaces/{quote(namespace)}/{plural}"
            if namespaced
            else (f"{prefix}/{plural}")
        )
        return f"{path}/{quote(name)}" if name else path

    def object_create(
        self, manifest: dict[str, Any], *, namespace: str = "", dry_run: bool = False
    ) -> dict[str, Any]:
        query = [("fieldManager", FIELD_MANAGER)]
        if dry_run:
            query.append(("dryRun", DRY_RUN))
        return self._call(
            "POST",
            self._object_path(str(manifest.get("kind")), namespace),
            query=query,
            body=manifest,
        )

    def object_get(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        return self._call("GET", self._object_path(kind, namespace, name))

    def object_replace(self, manifest: dict[str, Any], *, namespace: str = "") -> dict[str, Any]:
        name = str((manifest.get("metadata") or {}).get("name"))
        return self._call(
            "PUT",
            self._object_path(str(manifest.get("kind")), namespace, name),
            query=[("fieldManager", FIELD_MANAGER)],
            body=manifest,
        )

    def object_merge_patch(
        self, kind: str, namespace: str, name: str, patch: dict[str, Any]
    ) -> dict[str, Any]:
        try:
            request = self._api.param_serialize(
                method="PATCH",
                resource_path=self._object_path(kind, namespace, name),
                query_params=[("fieldManager", FIELD_MANAGER)],
                header_params={
                    "Accept": "application/json",
                    "Content-Type": "application/merge-patch+json",
                },
                body=patch,
                auth_settings=["BearerToken"],
            )
            response = self._api.call_api(*request, _request_timeout=self.timeout)
            data = response.read()
        except Exception as exc:
            raise translate(exc) from None
        if not 200 <= response.status <= 299:
            raise _error_from_api_exception(
                ApiException(
                    status=response.status,
                    reason=response.reason,
                    body=data.decode("utf-8", "replace") if data else None,
                )
            )
        return cast(dict[str, Any], json.loads(data)) if data else {}

    def object_delete(self, kind: str, namespace: str, name: str) -> bool:
        """Delete (background propagation); False if it was already gone."""
        try:
            self._call(
                "DELETE",
                self._object_path(kind, namespace, name),
                body={
                    "kind": "DeleteOptions",
                    "apiVersion": "v1",
                    "propagationPolicy": "Background",
                },
            )
        except NotFound:
            return False
        return True

    def objects_list(
        self, kind: str, namespace: str, *, label_selector: str = ""
    ) -> list[dict[str, Any]]:
        query = [("labelSelector", label_selector)] if label_selector else []
        found = self._call("GET", self._object_path(kind, namespace), query=query)
        return list(found.get("items") or [])

    # --------------------------------------------------------------- workspaces
    def workspace_list(self, namespace: str = "") -> list[dict[str, Any]]:
        if namespace:
            found = self._read(
                self.custom.list_namespaced_custom_object,
                KAITO_GROUP,
                KAITO_VERSION,
                namespace,
                WORKSPACES,
            )
        else:
            found = self._read(
                self.custom.list_cluster_custom_object, KAITO_GROUP, KAITO_VERSION, WORKSPACES
            )
        return list(cast(dict[str, Any], found).get("items") or [])

    def workspace_get(self, namespace: str, name: str) -> dict[str, Any]:
        found = self._read(
            self.custom.get_namespaced_custom_object,
            KAITO_GROUP,
            KAITO_VERSION,
            namespace,
            WORKSPACES,
            name,
        )
        return cast(dict[str, Any], found)

    def nodeclaims(self, label_selector: str) -> list[dict[str, Any]]:
        try:
            found = self._read(
                self.custom.list_cluster_custom_object,
                KARPENTER_GROUP,
                KARPENTER_VERSION,
                NODECLAIMS,
                label_selector=label_selector,
            )
        except NotFound:
            return []  # no Karpenter (node auto-provisioning off)
        return list(cast(dict[str, Any], found).get("items") or [])

    def nodes(self, names: list[str]) -> list[dict[str, Any]]:
        """The nodes among `names` that exist."""
        if not names:
            return []
        found = self._read(self.core.list_node)
        wanted = set(names)
        return [self._plain(n) for n in found.items if n.metadata and n.metadata.name in wanted]

    def service_get(self, namespace: str, name: str) -> dict[str, Any]:
        return cast(
            dict[str, Any],
            self._plain(self._read(self.core.read_namespaced_service, name, namespace)),
        )

    def events(self, namespace: str) -> list[dict[str, Any]]:
        found = self._read(self.core.list_namespaced_event, namespace)
        return [self._plain(e) for e in found.items]

    def pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        found = self._read(self.core.list_namespaced_pod, namespace, label_selector=label_selector)
        return [self._plain(p) for p in found.items]

    def pod_log(
        self,
        namespace: str,
        pod: str,
        *,
        tail: int = 60,
        previous: bool = False,
        container: str | None = None,
    ) -> str:
        text = self._read(
            self.core.read_namespaced_pod_log,
            pod,
            namespace,
            tail_lines=tail,
            previous=previous,
            container=container,
        )
        return str(text or "")

    # -------------------------------------------------------------------- proxy
    def service_proxy_path(self, namespace: str, service: str, port: int | str, path: str) -> str:
        return (
            f"/api/v1/namespaces/{quote(namespace)}/services/{quote(service)}:{port}/proxy/"
            + path.lstrip("/")
        )

    def service_proxy_stream(
        self,
        namespace: str,
        service: str,
        port: int | str,
        path: str,
        body: dict[str, Any],
        *,
        read_timeout: float = 120.0,
    ) -> Iterator[bytes]:
        """POST JSON through the API server's service proxy; yield the answer as it streams."""
        try:
            request = self._api.param_serialize(
                method="POST",
                resource_path=self.service_proxy_path(namespace, service, port, path),
                header_params={
                    "Content-Type": "application/json",
                    "Accept": "text/event-stream, application/json",
                },
                body=body,
                auth_settings=["BearerToken"],
            )
            response = self._api.call_api(
                *request, _request_timeout=(self.timeout[0], read_timeout)
            )
        except Exception as exc:
            raise translate(exc) from None
        raw = response.response
        if not 200 <= response.status <= 299:
            data = raw.read()
            raw.release_conn()
            raise _error_from_api_exception(
                ApiException(
                    status=response.status,
                    reason=response.reason,
                    body=data.decode("utf-8", "replace") if data else None,
                )
            )
        try:
            yield from raw.stream(1024, decode_content=True)
        except Exception as exc:
            raise translate(exc) from None
        finally:
            raw.release_conn()


# --------------------------------------------------------- plain HTTP through the service proxy
@dataclass(frozen=True)
class ProxyHttp:
    """What an HTTP client outside this module needs to reach a Service through the API server's
    service proxy: the URL, the auth header (a bearer token, if the credentials have one) and the
    TLS context (the cluster's CA, and a client certificate if the kubeconfig authenticates with
    one, as AKS's non-AAD admin kubeconfigs do)."""

    base_url: str
    headers: dict[str, str]
    verify: ssl.SSLContext | bool


def proxy_http_settings(
    credentials: Credentials, *, namespace: str, service: str, port: int | str = 80
) -> ProxyHttp:
    """The service proxy URL of ``namespace/service:port`` and how to authenticate to it, read
    from the same kubeconfig (or in-cluster account) the rest of this module uses. An exec
    plugin (kubelogin) is run here, so call it off any event loop. KubeconfigInvalid if the
    credentials cannot be turned into plain HTTP settings."""
    configuration = _configuration(credentials)
    try:
        # As the generated client authenticates its own requests (a refresh hook re-reads an
        # in-cluster token file).
        bearer: dict[str, Any] = dict(configuration.auth_settings().get("BearerToken") or {})
        authorization = bearer.get("value")
    except Exception as exc:  # a refresh hook (in-cluster token file) that fails
        raise KubeconfigInvalid(f"cannot read the cluster's token: {exc}") from None
    headers = {"Authorization": str(authorization)} if authorization else {}
    verify: ssl.SSLContext | bool
    if not configuration.verify_ssl:
        verify = False  # insecure-skip-tls-verify: true in the kubeconfig
    else:
        try:
            verify = ssl.create_default_context(cafile=configuration.ssl_ca_cert or None)
            if configuration.cert_file:
                verify.load_cert_chain(configuration.cert_file, configuration.key_file or None)
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise KubeconfigInvalid(
                f"the kubeconfig's CA or client certificate cannot be used: {exc}"
            ) from None
    if not headers and not configuration.cert_file:
        raise KubeconfigInvalid(
            "the kubeconfig has neither a token nor a client certificate for the service proxy"
        )
    base = str(configuration.host).rstrip("/")
    path = f"/api/v1/namespaces/{quote(namespace)}/services/{quote(service)}:{port}/proxy"
    return ProxyHttp(base_url=base + path, headers=headers, verify=verify)
