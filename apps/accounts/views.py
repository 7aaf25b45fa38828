"""Sign-in with a rate limit, and every sign-in attempt in the audit log."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import AuthenticationForm
from django.http import HttpRequest, HttpResponse

from apps.accounts.login_limits import (
    client_address,
    login_failure_record,
    login_refusal,
    login_success_record,
)
from apps.audit.services import audit_record

USERNAME_FIELD = "username"


class LoginView(auth_views.LoginView):
    """Django's sign-in page, refusing (429) after too many failures (see login_limits)."""

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        username = str(request.POST.get(USERNAME_FIELD, ""))[:150]
        address = client_address(request)
        refusal = login_refusal(username=username, address=address)
        if refusal is None:
            return super().post(request, *args, **kwargs)
        audit_record(
            actor=None,
            action="login.refused",
            outcome="refused",
            target=username,
            detail=f"from {address}: too many failed sign-ins for the {refusal.reason} "
            f"(retry in {refusal.retry_after_s}s)",
        )
        form = self.get_form()
        form.errors.clear()
        form.add_error(None, refusal.message)
        response = self.render_to_response(self.get_context_data(form=form), status=429)
        response["Retry-After"] = str(refusal.retry_after_s)
        return response

    def form_valid(self, form: AuthenticationForm) -> HttpResponse:
        response = super().form_valid(form)
        user = form.get_user()
        login_success_record(username=user.get_username())
        audit_record(
            actor=user,
            action="login",
            outcome="ok",
            target=user.get_username(),
            detail=f"from {client_address(self.request)}",
        )
        return response

    def form_invalid(self, form: AuthenticationForm) -> HttpResponse:
        username = str(self.request.POST.get(USERNAME_FIELD, ""))[:150]
        address = client_address(self.request)
        login_failure_record(username=username, address=address)
        audit_record(
            actor=None,
            action="login.failed",
            outcome="failed",
            target=username,
            detail=f"from {address}",  # never the password
        )
        return super().form_invalid(form)


class PasswordChangeView(auth_views.PasswordChangeView):
    def form_valid(self, form: Any) -> HttpResponse:
        response = super().form_valid(form)
        audit_record(
            actor=self.request.user,
            action="password.change",
            outcome="ok",
            target=self.request.user.get_username(),
        )
        return response
