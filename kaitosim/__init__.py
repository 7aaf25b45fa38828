"""kaitosim: a local stand-in for an AKS cluster running KAITO, and for Microsoft Foundry.

It serves the Kubernetes API (discovery, CRUD, watch, tables, service proxy, pod logs) to
unchanged clients (`kubectl`, the `kubernetes` Python client) and runs an in-process KAITO
controller that provisions simulated GPU nodes and inference servers for Workspaces.

Entry points: ``python -m kaitosim`` and :func:`kaitosim.server.start`.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
