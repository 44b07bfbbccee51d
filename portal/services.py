"""Writes behind the customer portal: sign-up, emails sent to users, runs started.

Each function composes the domain services of customers, billing and
agents. None of them reimplements a domain rule.
"""

from __future__ import annotations

import logging
import secrets
from datetime import UTC

import stripe
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode
from django.utils.text import slugify

from agents.jobs import execution_enqueue
from agents.models import Execution, Workflow
from billing import services as billing_services
from billing.models import Plan, Subscription
from billing.stripe.client import log_disabled, stripe_enabled
from billing.stripe.subscriptions import PlanNotSynced, stripe_subscription_create
from customers import services as customer_services
from customers.models import Customer, Invitation, Membership
from portal import selectors
from portal.tokens import email_verification_token

logger = logging.getLogger(__name__)

SLUG_MAX_LENGTH = 64
# Attempts to create a customer whose slug another sign-up took meanwhile:
# the next free number first, then random suffixes.
SLUG_SEQUENTIAL_ATTEMPTS = 3
SLUG_ATTEMPTS = 10
EMAIL_TAKEN = "An account with this email already exists."


@transaction.atomic
def signup_create(
    *, email: str, password: str, company_name: str, plan: Plan
) -> Membership:
    """Create the user, its customer, the owner membership and the subscription.

    All four rows commit together or not at all. When Stripe is configured
    the Stripe customer and subscription are created after the commit, so
    a Stripe failure leaves the committed sign-up in place. The failure is
    logged, and staff complete it with `stripe_subscription_create`. Raises
    ValidationError for an email address already in use, also by a sign-up
    committed at the same moment, or an inactive plan.
    """
    email = email.strip().lower()
    user = _user_create(email=email, password=password)
    customer = _customer_create(company_name.strip())
    membership = customer_services.membership_create(
        user=user, customer=customer, role=Membership.Role.OWNER
    )
    subscription = billing_services.subscription_create(
        customer=customer, plan=plan, start=timezone.now().astimezone(UTC).date()
    )
    logger.info(
        "Customer %s: signed up by user %s on plan %s",
        customer.slug,
        user.pk,
        plan.slug,
    )
    transaction.on_commit(lambda: _stripe_subscribe(subscription))
    return membership


def _stripe_subscribe(subscription: Subscription) -> None:
    if not stripe_enabled():
        log_disabled(f"Stripe subscription of subscription {subscription.pk}")
        return
    try:
        stripe_subscription_create(subscription)
    except (stripe.StripeError, PlanNotSynced):
        logger.exception(
            "Subscription %s: creating it in Stripe at sign-up failed; "
            "create it again with stripe_subscription_create",
            subscription.pk,
        )


def _user_create(*, email: str, password: str) -> AbstractBaseUser:
    """Create the user whose username is `email`, or raise ValidationError if taken.

    The username's unique index decides between sign-ups with the same
    address at the same moment: the later insert waits for the earlier
    transaction and fails once it commits.
    """
    user_model = get_user_model()
    if user_model.objects.filter(email__iexact=email).exists():
        raise ValidationError({"email": EMAIL_TAKEN})
    try:
        with transaction.atomic():
            return user_model.objects.create_user(
                username=email, email=email, password=password
            )
    except IntegrityError as error:
        # The database error names the address, which is not logged.
        logger.info(
            "Sign-up rejected: another sign-up took the email address meanwhile"
        )
        raise ValidationError({"email": EMAIL_TAKEN}) from error


def _customer_create(name: str) -> Customer:
    """Create a customer named `name` under a slug no other customer has.

    Another sign-up may take the chosen slug between the check and the
    insert. The insert then fails on the slug's unique index and is tried
    again with the next free slug, and after SLUG_SEQUENTIAL_ATTEMPTS with
    a random suffix, so that many sign-ups of one name cannot keep colliding.
    """
    for attempt in range(SLUG_ATTEMPTS):
        slug = _unique_slug(name, random_suffix=attempt >= SLUG_SEQUENTIAL_ATTEMPTS)
        try:
            with transaction.atomic():
                return Customer.objects.create(name=name, slug=slug)
        except IntegrityError:
            if not Customer.objects.filter(slug=slug).exists():
                raise
            logger.info(
                "Sign-up of %s: slug %s taken meanwhile; trying another", name, slug
            )
    raise ValidationError(
        {"company_name": "Signing up failed because of a conflict. Try again."}
    )


def _unique_slug(name: str, *, random_suffix: bool = False) -> str:
    base = slugify(name)[: SLUG_MAX_LENGTH - 8] or "customer"
    if random_suffix:
        return f"{base}-{secrets.token_hex(3)}"
    slug, suffix = base, 2
    while Customer.objects.filter(slug=slug).exists():
        slug = f"{base}-{suffix}"
        suffix += 1
    return slug


def verification_email_send(*, user: AbstractBaseUser, base_url: str) -> None:
    """Email the user a link that verifies their address.

    `base_url` is the site's scheme and host, e.g. https://example.com.
    """
    path = reverse(
        "portal:verify-email",
        kwargs={
            "uidb64": urlsafe_base64_encode(force_bytes(user.pk)),
            "token": email_verification_token.make_token(user),
        },
    )
    body = render_to_string(
        "portal/email/verify_email.txt", {"user": user, "url": base_url + path}
    )
    send_mail("Confirm your email address for AgentMargin", body, None, [user.email])
    logger.info("User %s: verification email sent", user.pk)


def invitation_send(
    *, customer: Customer, email: str, invited_by: AbstractBaseUser, base_url: str
) -> Invitation:
    """Create an invitation to the customer and email its link to `email`."""
    invitation, token = customer_services.invitation_create(
        customer=customer, email=email, invited_by=invited_by
    )
    url = base_url + reverse("portal:invitation-accept", kwargs={"token": token})
    body = render_to_string(
        "portal/email/invitation.txt",
        {
            "customer": customer,
            "invited_by": invited_by,
            "url": url,
            "expires_at": invitation.expires_at,
        },
    )
    send_mail(
        f"You are invited to {customer.name} on AgentMargin",
        body,
        None,
        [invitation.email],
    )
    return invitation


@transaction.atomic
def invitation_signup(*, invitation: Invitation, password: str) -> Membership:
    """Create the invited user with `password` and make it a member of the customer.

    The invitation row is locked first, so a second acceptance of it at
    the same moment waits and then raises InvitationInvalid.
    """
    invitation = Invitation.objects.select_for_update().get(pk=invitation.pk)
    if invitation.accepted_at is not None or invitation.revoked_at is not None:
        raise customer_services.InvitationInvalid("This invitation is no longer valid.")
    user_model = get_user_model()
    email_taken_error = ValidationError(
        {"email": "An account with this email already exists; log in instead."}
    )
    if user_model.objects.filter(email__iexact=invitation.email).exists():
        raise email_taken_error
    try:
        with transaction.atomic():
            user = user_model.objects.create_user(
                username=invitation.email, email=invitation.email, password=password
            )
    except IntegrityError as error:
        raise email_taken_error from error
    return customer_services.invitation_accept(invitation=invitation, user=user)


def execution_start(
    *, membership: Membership, workflow: Workflow, prompt: str
) -> Execution:
    """Queue a run of `workflow` for the member's customer.

    Raises ValidationError when the customer is not active, has no open
    subscription, or the workflow is not one the customer may start.
    Budgets and the concurrency limit are checked when a worker claims the
    run (agents.jobs), as for every other run.
    """
    customer = membership.customer
    if customer.status != Customer.Status.ACTIVE:
        raise ValidationError(
            f"Your account is {customer.get_status_display().lower()}, so new runs "
            "cannot start. Contact support to reactivate it."
        )
    if selectors.open_subscription(customer) is None:
        raise ValidationError(
            "Your account has no active plan. Contact support to choose one."
        )
    if not selectors.workflows_allowed(customer).filter(pk=workflow.pk).exists():
        raise ValidationError(
            {"workflow": f"Workflow {workflow.name} is not available on your plan."}
        )
    execution = execution_enqueue(customer=customer, workflow=workflow, prompt=prompt)
    logger.info(
        "Execution %s: started from the portal by user %s",
        execution.pk,
        membership.user_id,
    )
    return execution
