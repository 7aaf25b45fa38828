"""The simulated API server through the real ``kubernetes`` Python client."""

# The kubernetes client types every field Optional and returns plain objects for custom
# resources; these tests assert on those values, so mypy's None/object checks are relaxed.
# mypy: disable-error-code="union-attr,index,arg-type,operator,return-value,type-var,misc"

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from kubernetes import client, watch

from kaitosim.server import SimulatorHandle
from tests.kaitosim.conftest import (
    api_error_body,
    create_workspace,
    get_workspace,
    raw_request,
    wait_for,
    wait_for_condition,
    workspace_manifest,
)

GROUP, VERSION, PLURAL = "kaito.sh", "v1beta1", "workspaces"


def config_map(
    name: str, labels: dict[str, str] | None = None, data: dict[str, str] | None = None
) -> client.V1ConfigMap:
    return client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name=name, labels=labels), data=data or {"k": "v"}
    )


def test_it_reports_version_and_discovery(api_client: client.ApiClient) -> None:
    version = client.VersionApi(api_client).get_code()
    assert version.major == "1"
    assert version.git_version.startswith("v1.")
    groups = {g.name: g for g in client.ApisApi(api_client).get_api_versions().groups}
    assert groups["kaito.sh"].preferred_version.version == "v1beta1"
    assert {v.version for v in groups["kaito.sh"].versions} == {"v1beta1", "v1alpha1"}
    assert "karpenter.sh" in groups
    resources = client.CoreV1Api(api_client).get_api_resources().resources
    names = {r.name for r in resources}
    assert {
        "pods",
        "pods/log",
        "services",
        "services/proxy",
        "events",
        "secrets",
        "configmaps",
        "nodes",
    } <= names


def test_it_creates_reads_updates_and_deletes_a_configmap(
    core: client.CoreV1Api, namespace: str
) -> None:
    created = core.create_namespaced_config_map(namespace, config_map("settings", data={"a": "1"}))
    assert created.metadata.uid
    assert created.metadata.resource_version
    assert created.metadata.creation_timestamp is not None
    fetched = core.read_namespaced_config_map("settings", namespace)
    fetched.data["b"] = "2"
    updated = core.replace_namespaced_config_map("settings", namespace, fetched)
    assert updated.data == {"a": "1", "b": "2"}
    assert int(updated.metadata.resource_version) > int(created.metadata.resource_version)
    core.delete_namespaced_config_map("settings", namespace)
    with pytest.raises(client.ApiException) as error:
        core.read_namespaced_config_map("settings", namespace)
    assert error.value.status == 404
    body = api_error_body(error.value)
    assert body["kind"] == "Status"
    assert body["reason"] == "NotFound"
    assert body["message"] == 'configmaps "settings" not found'
    assert body["details"] == {"name": "settings", "kind": "configmaps"}


def test_it_returns_409_already_exists_on_duplicate_create(
    core: client.CoreV1Api, namespace: str
) -> None:
    core.create_namespaced_config_map(namespace, config_map("dup"))
    with pytest.raises(client.ApiException) as error:
        core.create_namespaced_config_map(namespace, config_map("dup"))
    assert error.value.status == 409
    body = api_error_body(error.value)
    assert body["reason"] == "AlreadyExists"
    assert body["message"] == 'configmaps "dup" already exists'


def test_it_returns_409_on_stale_resource_version(
    custom: client.CustomObjectsApi, namespace: str
) -> None:
    created = create_workspace(custom, namespace, workspace_manifest("stale"))
    stale = dict(created)
    wait_for(
        lambda: (
            get_workspace(custom, namespace, "stale")["metadata"]["resourceVersion"]
            != created["metadata"]["resourceVersion"]
        ),
        message="the controller to touch the workspace",
    )
    stale["metadata"] = {**created["metadata"], "labels": {"team": "a"}}
    with pytest.raises(client.ApiException) as error:
        custom.replace_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "stale", stale)
    assert error.value.status == 409
    body = api_error_body(error.value)
    assert body["reason"] == "Conflict"
    assert body["message"] == (
        'Operation cannot be fulfilled on workspaces.kaito.sh "stale": the object has been '
        "modified; please apply your changes to the latest version and try again"
    )
    assert body["details"] == {"name": "stale", "group": "kaito.sh", "kind": "workspaces"}


def test_it_requires_a_resource_version_to_replace_a_custom_resource(
    custom: client.CustomObjectsApi, namespace: str
) -> None:
    created = create_workspace(custom, namespace, workspace_manifest("norv"))
    body = {key: value for key, value in created.items() if key != "status"}
    body["metadata"] = {"name": "norv", "labels": {"x": "y"}}
    with pytest.raises(client.ApiException) as error:
        custom.replace_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "norv", body)
    assert error.value.status == 422
    assert "must be specified for an update" in api_error_body(error.value)["message"]


def test_it_rejects_a_workspace_without_label_selector_with_422(
    custom: client.CustomObjectsApi, namespace: str
) -> None:
    manifest = workspace_manifest("nosel")
    del manifest["resource"]["labelSelector"]
    with pytest.raises(client.ApiException) as error:
        create_workspace(custom, namespace, manifest)
    assert error.value.status == 422
    body = api_error_body(error.value)
    assert body["reason"] == "Invalid"
    assert (
        body["message"]
        == 'Workspace.kaito.sh "nosel" is invalid: resource.labelSelector: Required value'
    )
    assert body["details"]["causes"] == [
        {
            "reason": "FieldValueRequired",
            "message": "Required value",
            "field": "resource.labelSelector",
        }
    ]


def test_it_applies_crd_defaults_and_prunes_unknown_fields(
    custom: client.CustomObjectsApi, namespace: str
) -> None:
    manifest = workspace_manifest("defaults")
    manifest["spec"] = {"mistake": True}
    created = create_workspace(custom, namespace, manifest)
    assert created["resource"]["count"] == 1
    assert created["inference"]["preset"]["accessMode"] == "public"
    assert "spec" not in created
    assert created["metadata"]["generation"] == 1


def test_it_bumps_generation_only_on_spec_changes(
    custom: client.CustomObjectsApi, namespace: str
) -> None:
    create_workspace(custom, namespace, workspace_manifest("gen"))
    patched = custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "gen", {"metadata": {"labels": {"owner": "me"}}}
    )
    assert patched["metadata"]["generation"] == 1
    patched = custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "gen", {"inference": {"adapters": []}}
    )
    assert patched["metadata"]["generation"] == 2


def test_it_ignores_status_on_the_main_resource_and_spec_on_status(
    custom: client.CustomObjectsApi, namespace: str
) -> None:
    create_workspace(custom, namespace, workspace_manifest("statussub"))
    wait_for_condition(custom, namespace, "statussub", "WorkspaceSucceeded")
    before = get_workspace(custom, namespace, "statussub")
    patched = custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "statussub", {"status": {"state": "Hacked"}}
    )
    assert patched["status"]["state"] == "Ready"
    patched = custom.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        "statussub",
        {"status": {"state": "Hacked"}, "resource": {"instanceType": "Standard_NC48ads_A100_v4"}},
    )
    assert patched["status"]["state"] == "Hacked"
    assert patched["resource"]["instanceType"] == before["resource"]["instanceType"]
    assert patched["metadata"]["generation"] == before["metadata"]["generation"]


def test_it_supports_merge_and_json_patch(
    core: client.CoreV1Api, api_client: client.ApiClient, namespace: str
) -> None:
    core.create_namespaced_config_map(namespace, config_map("patchme", data={"a": "1", "b": "2"}))
    status, body = raw_request(
        api_client,
        "PATCH",
        f"/api/v1/namespaces/{namespace}/configmaps/patchme",
        {"data": {"a": None, "c": "3"}},
        "application/merge-patch+json",
    )
    assert status == 200
    assert body["data"] == {"b": "2", "c": "3"}
    status, body = raw_request(
        api_client,
        "PATCH",
        f"/api/v1/namespaces/{namespace}/configmaps/patchme",
        [
            {"op": "replace", "path": "/data/b", "value": "20"},
            {"op": "add", "path": "/data/d", "value": "4"},
        ],
        "application/json-patch+json",
    )
    assert status == 200
    assert body["data"] == {"b": "20", "c": "3", "d": "4"}


def test_it_rejects_strategic_merge_patch_on_custom_resources_with_415(
    api_client: client.ApiClient, custom: client.CustomObjectsApi, namespace: str
) -> None:
    create_workspace(custom, namespace, workspace_manifest("smp"))
    status, body = raw_request(
        api_client,
        "PATCH",
        f"/apis/kaito.sh/v1beta1/namespaces/{namespace}/workspaces/smp",
        {"metadata": {"labels": {"a": "b"}}},
        "application/strategic-merge-patch+json",
    )
    assert status == 415
    assert body["reason"] == "UnsupportedMediaType"
    assert "application/merge-patch+json" in body["message"]


def test_it_creates_and_merges_with_server_side_apply(
    api_client: client.ApiClient, namespace: str
) -> None:
    path = f"/api/v1/namespaces/{namespace}/configmaps/applied"
    manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "applied"},
        "data": {"a": "1"},
    }
    status, _ = raw_request(
        api_client,
        "PATCH",
        path,
        manifest,
        "application/apply-patch+yaml",
        [("fieldManager", "test")],
    )
    assert status == 201
    manifest["data"] = {"b": "2"}
    status, body = raw_request(
        api_client,
        "PATCH",
        path,
        manifest,
        "application/apply-patch+yaml",
        [("fieldManager", "test")],
    )
    assert status == 200
    assert body["data"] == {"a": "1", "b": "2"}
    status, body = raw_request(api_client, "PATCH", path, manifest, "application/apply-patch+yaml")
    assert status == 400


def test_it_validates_but_stores_nothing_on_dry_run(
    custom: client.CustomObjectsApi, core: client.CoreV1Api, namespace: str
) -> None:
    created = custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, workspace_manifest("dry"), dry_run="All"
    )
    assert created["metadata"]["name"] == "dry"
    assert created["metadata"]["uid"]
    with pytest.raises(client.ApiException) as missing:
        get_workspace(custom, namespace, "dry")
    assert missing.value.status == 404
    with pytest.raises(client.ApiException) as rejected:
        custom.create_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            workspace_manifest("dry", preset="no-such-model"),
            dry_run="All",
        )
    assert rejected.value.status == 400
    assert (
        "Unsupported inference preset name no-such-model"
        in api_error_body(rejected.value)["message"]
    )
    core.create_namespaced_config_map(namespace, config_map("keep"))
    core.delete_namespaced_config_map("keep", namespace, dry_run="All")
    assert core.read_namespaced_config_map("keep", namespace).metadata.name == "keep"


def test_it_filters_lists_by_label_and_field_selectors(
    core: client.CoreV1Api, namespace: str
) -> None:
    core.create_namespaced_config_map(namespace, config_map("a", {"tier": "web", "env": "prod"}))
    core.create_namespaced_config_map(namespace, config_map("b", {"tier": "db", "env": "prod"}))
    core.create_namespaced_config_map(namespace, config_map("c", {"tier": "web"}))

    def names(**kwargs: Any) -> list[str]:
        return sorted(
            item.metadata.name
            for item in core.list_namespaced_config_map(namespace, **kwargs).items
        )

    assert names(label_selector="tier=web") == ["a", "c"]
    assert names(label_selector="tier==web,env=prod") == ["a"]
    assert names(label_selector="tier!=web") == ["b"]
    assert names(label_selector="tier in (db,cache)") == ["b"]
    assert names(label_selector="tier notin (db)") == ["a", "c"]
    assert names(label_selector="env") == ["a", "b"]
    assert names(label_selector="!env") == ["c"]
    assert names(field_selector="metadata.name=b") == ["b"]
    assert names(field_selector="metadata.name!=b") == ["a", "c"]
    listed = core.list_namespaced_config_map(namespace, limit=1)
    assert listed.metadata.resource_version
    with pytest.raises(client.ApiException) as error:
        core.list_namespaced_config_map(namespace, field_selector="data.k=v")
    assert error.value.status == 400


def test_it_lists_workspaces_cluster_wide_and_namespaced(
    custom: client.CustomObjectsApi, core: client.CoreV1Api, namespace: str
) -> None:
    create_workspace(custom, namespace, workspace_manifest("listed"))
    everywhere = custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)
    assert everywhere["kind"] == "WorkspaceList"
    assert (namespace, "listed") in {
        (i["metadata"]["namespace"], i["metadata"]["name"]) for i in everywhere["items"]
    }
    here = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
    assert [i["metadata"]["name"] for i in here["items"]] == ["listed"]
    old = custom.get_namespaced_custom_object(GROUP, "v1alpha1", namespace, PLURAL, "listed")
    assert old["apiVersion"] == "kaito.sh/v1alpha1"


def test_it_filters_events_by_involved_object(
    core: client.CoreV1Api, custom: client.CustomObjectsApi, namespace: str
) -> None:
    create_workspace(custom, namespace, workspace_manifest("evented"))
    wait_for_condition(custom, namespace, "evented", "WorkspaceSucceeded")
    events = core.list_namespaced_event(
        namespace, field_selector="involvedObject.name=evented,involvedObject.kind=Workspace"
    ).items
    reasons = [e.reason for e in events]
    assert "NodeClaimCreated" in reasons
    assert "WorkspaceSucceeded" in reasons
    assert all(e.involved_object.name == "evented" for e in events)


def test_it_returns_404_when_the_namespace_is_missing(core: client.CoreV1Api) -> None:
    with pytest.raises(client.ApiException) as error:
        core.create_namespaced_config_map("does-not-exist", config_map("x"))
    assert error.value.status == 404
    assert api_error_body(error.value)["message"] == 'namespaces "does-not-exist" not found'


def test_it_deletes_the_contents_of_a_deleted_namespace(
    core: client.CoreV1Api, custom: client.CustomObjectsApi
) -> None:
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="doomed")))
    core.create_namespaced_config_map("doomed", config_map("inside"))
    create_workspace(custom, "doomed", workspace_manifest("inside-ws"))
    core.delete_namespace("doomed")
    assert core.read_namespace("doomed").status.phase == "Terminating"

    def gone() -> bool:
        try:
            core.read_namespace("doomed")
        except client.ApiException as error:
            return error.status == 404
        return False

    wait_for(gone, message="the namespace to go")
    claims = custom.list_cluster_custom_object(
        "karpenter.sh", "v1", "nodeclaims", label_selector="kaito.sh/workspacenamespace=doomed"
    )
    assert claims["items"] == []


def test_it_holds_a_deleted_object_while_finalizers_remain(
    core: client.CoreV1Api, namespace: str
) -> None:
    body = config_map("held")
    body.metadata.finalizers = ["example.com/hold"]
    core.create_namespaced_config_map(namespace, body)
    core.delete_namespaced_config_map("held", namespace)
    held = core.read_namespaced_config_map("held", namespace)
    assert held.metadata.deletion_timestamp is not None
    core.patch_namespaced_config_map("held", namespace, {"metadata": {"finalizers": None}})
    with pytest.raises(client.ApiException) as error:
        core.read_namespaced_config_map("held", namespace)
    assert error.value.status == 404


def test_it_streams_watch_events_and_resumes_from_a_resource_version(
    core: client.CoreV1Api, namespace: str
) -> None:
    start = core.list_namespaced_config_map(namespace).metadata.resource_version
    core.create_namespaced_config_map(namespace, config_map("w1"))
    core.patch_namespaced_config_map("w1", namespace, {"data": {"k": "changed"}})
    core.delete_namespaced_config_map("w1", namespace)
    seen = []
    stream = watch.Watch()
    for event in stream.stream(
        core.list_namespaced_config_map, namespace, resource_version=start, timeout_seconds=2
    ):
        seen.append((event["type"], event["object"].metadata.name))
        if len(seen) == 3:
            stream.stop()
    assert seen == [("ADDED", "w1"), ("MODIFIED", "w1"), ("DELETED", "w1")]


def test_it_sends_initial_added_events_for_a_watch_without_resource_version(
    core: client.CoreV1Api, namespace: str
) -> None:
    core.create_namespaced_config_map(namespace, config_map("existing"))
    stream = watch.Watch()
    events = []

    def create_later() -> None:
        time.sleep(0.2)
        core.create_namespaced_config_map(namespace, config_map("later"))

    threading.Thread(target=create_later, daemon=True).start()
    for event in stream.stream(core.list_namespaced_config_map, namespace, timeout_seconds=3):
        events.append((event["type"], event["object"].metadata.name))
        if len(events) == 2:
            stream.stop()
    assert events == [("ADDED", "existing"), ("ADDED", "later")]


def test_it_answers_410_gone_for_a_compacted_resource_version(
    core: client.CoreV1Api, api_client: client.ApiClient, namespace: str
) -> None:
    old = core.list_namespaced_config_map(namespace).metadata.resource_version
    core.create_namespaced_config_map(namespace, config_map("compacted"))
    status, _ = raw_request(api_client, "POST", "/kaitosim/compact", {})
    assert status == 200
    stream = watch.Watch()
    with pytest.raises(client.ApiException) as error:
        for _event in stream.stream(
            core.list_namespaced_config_map, namespace, resource_version=old
        ):
            pass
    assert error.value.status == 410
    assert "too old resource version" in str(error.value.reason)


def test_it_sends_bookmarks_when_asked(core: client.CoreV1Api, namespace: str) -> None:
    start = core.list_namespaced_config_map(namespace).metadata.resource_version
    stream = watch.Watch()
    types = []
    for event in stream.stream(
        core.list_namespaced_config_map,
        namespace,
        resource_version=start,
        allow_watch_bookmarks=True,
        timeout_seconds=3,
    ):
        types.append(event["type"])
        if event["type"] == "BOOKMARK":
            assert int(event["raw_object"]["metadata"]["resourceVersion"]) >= int(start)
            stream.stop()
    assert "BOOKMARK" in types


def test_it_ends_a_watch_after_timeout_seconds(core: client.CoreV1Api, namespace: str) -> None:
    current = core.list_namespaced_config_map(namespace).metadata.resource_version
    started = time.monotonic()
    events = list(
        watch.Watch().stream(
            core.list_namespaced_config_map, namespace, timeout_seconds=1, resource_version=current
        )
    )
    assert time.monotonic() - started < 5
    assert all(e["type"] in ("ADDED", "MODIFIED", "DELETED") for e in events)


def test_it_rejects_missing_or_wrong_tokens_with_401(kaitosim_server: SimulatorHandle) -> None:
    configuration = client.Configuration()
    configuration.host = kaitosim_server.api_url
    configuration.ssl_ca_cert = str(kaitosim_server.ca_cert_path)
    configuration.api_key = {"authorization": "Bearer wrong"}
    with pytest.raises(client.ApiException) as error:
        client.CoreV1Api(client.ApiClient(configuration)).list_namespace()
    assert error.value.status == 401
    assert api_error_body(error.value)["reason"] == "Unauthorized"
    configuration.api_key = {}
    with pytest.raises(client.ApiException) as anonymous:
        client.CoreV1Api(client.ApiClient(configuration)).list_namespace()
    assert anonymous.value.status == 401


def test_it_forbids_writes_for_the_viewer(viewer_client: client.ApiClient, namespace: str) -> None:
    viewer = client.CustomObjectsApi(viewer_client)
    assert viewer.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"] == []
    with pytest.raises(client.ApiException) as error:
        viewer.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, workspace_manifest("nope")
        )
    assert error.value.status == 403
    body = api_error_body(error.value)
    assert body["reason"] == "Forbidden"
    assert body["message"] == (
        'workspaces.kaito.sh is forbidden: User "kaitosim-viewer" cannot create resource '
        f'"workspaces" in API group "kaito.sh" in the namespace "{namespace}"'
    )
    with pytest.raises(client.ApiException) as secrets:
        client.CoreV1Api(viewer_client).list_namespaced_secret(namespace)
    assert secrets.value.status == 403


def test_it_answers_self_subject_access_reviews_per_token(
    api_client: client.ApiClient, viewer_client: client.ApiClient
) -> None:
    review = client.V1SelfSubjectAccessReview(
        spec=client.V1SelfSubjectAccessReviewSpec(
            resource_attributes=client.V1ResourceAttributes(
                namespace="default", verb="create", group="kaito.sh", resource="workspaces"
            )
        )
    )
    admin = client.AuthorizationV1Api(api_client).create_self_subject_access_review(review)
    assert admin.status.allowed is True
    viewer = client.AuthorizationV1Api(viewer_client).create_self_subject_access_review(review)
    assert viewer.status.allowed is False
    review.spec.resource_attributes.verb = "list"
    assert (
        client.AuthorizationV1Api(viewer_client)
        .create_self_subject_access_review(review)
        .status.allowed
        is True
    )


def test_it_returns_405_for_unsupported_verbs(
    api_client: client.ApiClient, custom: client.CustomObjectsApi, namespace: str
) -> None:
    create_workspace(custom, namespace, workspace_manifest("ro"))
    status, body = raw_request(
        api_client, "DELETE", f"/apis/kaito.sh/v1alpha1/namespaces/{namespace}/workspaces/ro"
    )
    assert status == 405
    assert body["reason"] == "MethodNotAllowed"
