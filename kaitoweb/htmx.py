from __future__ import annotations

from django.http import HttpRequest


def htmx_partial(request: HttpRequest) -> bool:
    """An htmx request for a fragment, not a boosted full-page navigation (as NetBox does)."""
    htmx = getattr(request, "htmx", None)
    if not htmx:
        return False
    # A history restore (Back after the cache was evicted) needs the whole page.
    return not htmx.boosted and not htmx.history_restore_request
