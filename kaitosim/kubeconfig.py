"""Writing a kubeconfig that points kubectl and the kubernetes client at the simulator."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import yaml

CLUSTER_NAME = "kaitosim"


def kubeconfig_document(
    api_url: str, admin_token: str, viewer_token: str, ca_pem: bytes | None = None
) -> dict[str, object]:
    """Contexts ``kaitosim`` (admin, current) and ``kaitosim-viewer`` (read-only)."""
    cluster: dict[str, str] = {"server": api_url}
    if ca_pem:
        cluster["certificate-authority-data"] = base64.b64encode(ca_pem).decode()
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CLUSTER_NAME, "cluster": cluster}],
        "users": [
            {"name": "kaitosim-admin", "user": {"token": admin_token}},
            {"name": "kaitosim-viewer", "user": {"token": viewer_token}},
        ],
        "contexts": [
            {
                "name": CLUSTER_NAME,
                "context": {
                    "cluster": CLUSTER_NAME,
                    "user": "kaitosim-admin",
                    "namespace": "default",
                },
            },
            {
                "name": "kaitosim-viewer",
                "context": {
                    "cluster": CLUSTER_NAME,
                    "user": "kaitosim-viewer",
                    "namespace": "default",
                },
            },
        ],
        "current-context": CLUSTER_NAME,
        "preferences": {},
    }


def write_kubeconfig(
    path: Path, api_url: str, admin_token: str, viewer_token: str, ca_pem: bytes | None = None
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".tmp")
    document = kubeconfig_document(api_url, admin_token, viewer_token, ca_pem)
    temporary.write_text(yaml.safe_dump(document, sort_keys=False))
    os.chmod(temporary, 0o600)
    temporary.replace(path)
    return path
