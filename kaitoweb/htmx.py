from __future__ import annotations

from django.http import HttpRequest


def htmx_partial(request: HttpRequest) -> bool:
    """An htmx request for a fragment, not a boosted full-page navigation (as NetBox does)."""
    htmx = getattr(request, "htmx", None)
    # A history restore (Back after the cache was evicted) needs the whole page.
    return bool(htmx) and not htmx.boosted and not htmx.history_restore_request
