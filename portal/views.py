"""Pages of the customer portal, thin over portal.services and portal.selectors.

Every page works without JavaScript. Only the live updates of a running
execution need it, and that page reloads to the latest state without it.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model, login
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.encoding import force_str
from django.utils.http import urlsafe_base64_decode
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from agents.customer_events import customer_event
from agents.models import Execution
from agents.views import (
    DEFAULT_KEEPALIVE_SECONDS,
    DEFAULT_STREAM_MAX_SECONDS,
    ExecutionEventStream,
)
from billing.charts import stacked_bars
from customers import api_keys
from customers import services as customer_services
from customers.models import ApiKey, Invitation
from portal import forms, selectors, services
from portal.access import customer_required, owner_required, verified_required
from portal.tokens import email_verification_token

EXECUTIONS_PER_PAGE = 25


def _base_url(request: HttpRequest) -> str:
    return f"{request.scheme}://{request.get_host()}"


def _apply_errors(form, error: ValidationError) -> None:
    """Show a service's ValidationError on the form's fields, or above them."""
    if hasattr(error, "error_dict"):
        for field, field_errors in error.error_dict.items():
            form.add_error(field if field in form.fields else None, field_errors)
    else:
        form.add_error(None, error)


# Sign-up, verification, invitations -------------------------------------


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    if selectors.membership_for_user(request.user) is not None:
        return redirect("portal:dashboard")
    form = forms.SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            membership = services.signup_create(
                email=form.cleaned_data["email"],
                password=form.cleaned_data["password1"],
                company_name=form.cleaned_data["company_name"],
                plan=form.cleaned_data["plan"],
            )
        except ValidationError as error:
            _apply_errors(form, error)
        else:
            login(request, membership.user)
            services.verification_email_send(
                user=membership.user, base_url=_base_url(request)
            )
            messages.success(
                request,
                f"Welcome to AgentMargin. We sent a link to {membership.user.email} "
                "to confirm your address.",
            )
            return redirect("portal:dashboard")
    return render(request, "portal/signup.html", {"form": form})


@require_GET
def verify_email(request: HttpRequest, uidb64: str, token: str) -> HttpResponse:
    user = _user_from_uid(uidb64)
    membership = selectors.membership_for_user(user) if user else None
    if membership is None or not email_verification_token.check_token(user, token):
        return render(request, "portal/verify_email_invalid.html", status=400)
    customer_services.membership_verify_email(membership=membership)
    messages.success(request, "Your email address is confirmed.")
    if request.user.is_authenticated:
        return redirect("portal:dashboard")
    return redirect("portal:login")


def _user_from_uid(uidb64: str):
    try:
        pk = force_str(urlsafe_base64_decode(uidb64))
        return get_user_model().objects.filter(pk=pk).first()
    except (TypeError, ValueError, OverflowError):
        return None


@require_POST
@customer_required
def verification_resend(request: HttpRequest) -> HttpResponse:
    if request.membership.email_verified_at is None:
        services.verification_email_send(user=request.user, base_url=_base_url(request))
        messages.success(request, f"We sent a new link to {request.user.email}.")
    return redirect("portal:dashboard")


@require_http_methods(["GET", "POST"])
def invitation_accept(request: HttpRequest, token: str) -> HttpResponse:
    try:
        invitation = customer_services.invitation_get_pending(token)
    except customer_services.InvitationInvalid as error:
        return render(
            request,
            "portal/invitation_invalid.html",
            {"reason": str(error)},
            status=404,
        )
    form = forms.InvitationSignupForm(request.POST or None, email=invitation.email)
    if request.method == "POST" and form.is_valid():
        try:
            membership = services.invitation_signup(
                invitation=invitation, password=form.cleaned_data["password1"]
            )
        except customer_services.InvitationInvalid as error:
            form.add_error(None, str(error))
        except ValidationError as error:
            _apply_errors(form, error)
        else:
            login(request, membership.user)
            messages.success(request, f"Welcome to {invitation.customer.name}.")
            return redirect("portal:dashboard")
    return render(
        request,
        "portal/invitation_accept.html",
        {"form": form, "invitation": invitation},
    )


# Dashboard and executions -------------------------------------------------


@require_GET
@customer_required
def dashboard(request: HttpRequest) -> HttpResponse:
    overview = selectors.period_overview(request.customer)
    context = {
        "overview": overview,
        "recent": selectors.executions_of(request.customer)[:5],
        "workflow_chart": _charge_chart(overview.by_workflow, overview, "workflow"),
        "day_chart": _charge_chart(overview.by_day, overview, "day"),
    }
    return render(request, "portal/dashboard.html", context)


def _charge_chart(shares, overview, dimension: str):
    return stacked_bars(
        [share.label for share in shares],
        {"Charges": [share.amount for share in shares]},
        title=f"Charges so far by {dimension}",
        unit=overview.currency.upper(),
        width=520,
        height=220,
    )


@require_GET
@customer_required
def execution_list(request: HttpRequest) -> HttpResponse:
    form = forms.ExecutionFilterForm(request.GET or None)
    filters = form.cleaned_data if form.is_valid() else {}
    executions = selectors.executions_of(
        request.customer,
        status=filters.get("status") or "",
        workflow=filters.get("workflow"),
        created_from=filters.get("created_from"),
        created_to=filters.get("created_to"),
    )
    page = Paginator(executions, EXECUTIONS_PER_PAGE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        "form": form,
        "page": page,
        "query": query.urlencode(),
        "filtered": bool(filters and any(filters.values())),
    }
    return render(request, "portal/execution_list.html", context)


@require_GET
@customer_required
def execution_detail(request: HttpRequest, execution_id: int) -> HttpResponse:
    execution = selectors.execution_of(request.customer, execution_id)
    context = {
        "execution": execution,
        "status_explanation": selectors.STATUS_EXPLANATIONS.get(execution.status, ""),
        "status_texts": {
            "labels": dict(Execution.Status.choices),
            "explanations": selectors.STATUS_EXPLANATIONS,
        },
        "messages_list": selectors.execution_messages(execution),
        "events_url": reverse("portal:execution-events", args=[execution.pk]),
    }
    return render(request, "portal/execution_detail.html", context)


@require_GET
@customer_required
def execution_events(request: HttpRequest, execution_id: int) -> HttpResponse:
    """Stream the execution's messages as server-sent events, without any cost."""
    execution = selectors.execution_of(request.customer, execution_id)
    stream = ExecutionEventStream(
        execution.pk,
        keepalive_seconds=getattr(
            settings, "AGENTMARGIN_LIVE_KEEPALIVE_SECONDS", DEFAULT_KEEPALIVE_SECONDS
        ),
        max_seconds=getattr(
            settings, "AGENTMARGIN_LIVE_STREAM_MAX_SECONDS", DEFAULT_STREAM_MAX_SECONDS
        ),
        event_filter=customer_event,
    )
    response = StreamingHttpResponse(stream.events(), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


@require_http_methods(["GET", "POST"])
@customer_required
def execution_start(request: HttpRequest) -> HttpResponse:
    form = forms.ExecutionStartForm(request.POST or None, customer=request.customer)
    if request.method == "POST" and form.is_valid():
        try:
            execution = services.execution_start(
                membership=request.membership,
                workflow=form.cleaned_data["workflow"],
                prompt=form.cleaned_data["prompt"],
            )
        except ValidationError as error:
            _apply_errors(form, error)
        else:
            messages.success(request, f"Execution {execution.pk} is queued.")
            return redirect("portal:execution-detail", execution_id=execution.pk)
    return render(request, "portal/execution_start.html", {"form": form})


# API keys, invoices, team -------------------------------------------------


@require_http_methods(["GET", "POST"])
@customer_required
def api_key_list(request: HttpRequest) -> HttpResponse:
    form = forms.ApiKeyCreateForm(request.POST or None)
    created_key = None
    status = 200
    if request.method == "POST":
        status = 400
        if request.membership.email_verified_at is None:
            return render(request, "portal/verify_first.html", status=403)
        if form.is_valid():
            try:
                _, created_key = api_keys.api_key_create(
                    customer=request.customer,
                    name=form.cleaned_data["name"],
                    created_by=request.user,
                )
            except ValidationError as error:
                _apply_errors(form, error)
            else:
                # The key is shown in this response only, never stored or
                # redirected with, so a reload does not show it again.
                form = forms.ApiKeyCreateForm()
                status = 200
    context = {
        "form": form,
        "created_key": created_key,
        "keys": selectors.api_keys_of(request.customer),
    }
    return render(request, "portal/api_keys.html", context, status=status)


@require_POST
@verified_required
def api_key_revoke(request: HttpRequest, key_id: int) -> HttpResponse:
    api_key = get_object_or_404(ApiKey, pk=key_id, customer=request.customer)
    api_keys.api_key_revoke(api_key=api_key)
    messages.success(request, f"Key {api_key.name} ({api_key.prefix}…) is revoked.")
    return redirect("portal:api-keys")


@require_GET
@customer_required
def invoices(request: HttpRequest) -> HttpResponse:
    context = {
        "overview": selectors.period_overview(request.customer),
        "statements": selectors.statements_of(request.customer),
        "stripe_invoices": selectors.stripe_invoices_of(request.customer),
    }
    return render(request, "portal/invoices.html", context)


@require_http_methods(["GET", "POST"])
@customer_required
def team(request: HttpRequest) -> HttpResponse:
    form = forms.InvitationForm(request.POST or None)
    status = 200
    if request.method == "POST":
        if not request.membership.is_owner:
            return render(request, "portal/owner_only.html", status=403)
        if request.membership.email_verified_at is None:
            return render(request, "portal/verify_first.html", status=403)
        if form.is_valid():
            try:
                invitation = services.invitation_send(
                    customer=request.customer,
                    email=form.cleaned_data["email"],
                    invited_by=request.user,
                    base_url=_base_url(request),
                )
            except ValidationError as error:
                _apply_errors(form, error)
            else:
                messages.success(request, f"Invitation sent to {invitation.email}.")
                return redirect("portal:team")
        status = 400
    context = {
        "form": form,
        "members": selectors.members_of(request.customer),
        "invitations": selectors.invitations_pending(request.customer),
    }
    return render(request, "portal/team.html", context, status=status)


@require_POST
@owner_required
def invitation_revoke(request: HttpRequest, invitation_id: int) -> HttpResponse:
    invitation = get_object_or_404(
        Invitation, pk=invitation_id, customer=request.customer
    )
    customer_services.invitation_revoke(invitation=invitation)
    messages.success(request, f"The invitation to {invitation.email} is withdrawn.")
    return redirect("portal:team")
