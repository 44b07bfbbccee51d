"""Writes of the customers app: portal memberships and invitations."""

from __future__ import annotations

import hashlib
import logging
import secrets
from datetime import timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from customers.models import Customer, Invitation, Membership

logger = logging.getLogger(__name__)

INVITATION_VALID_FOR = timedelta(days=7)


class InvitationInvalid(Exception):
    """Raised for an invitation token that is unknown, used, revoked or expired."""


def invitation_token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@transaction.atomic
def membership_create(
    *, user: AbstractBaseUser, customer: Customer, role: str = Membership.Role.MEMBER
) -> Membership:
    """Make `user` a portal user of `customer`.

    Raises ValidationError when the user already belongs to a customer.
    """
    if Membership.objects.filter(user=user).exists():
        raise ValidationError({"user": f"User {user} already belongs to a customer."})
    membership = Membership.objects.create(user=user, customer=customer, role=role)
    logger.info("Customer %s: user %s joined as %s", customer.slug, user.pk, role)
    return membership


def membership_verify_email(*, membership: Membership) -> Membership:
    """Record that the user opened the verification link. A repeat changes nothing."""
    if membership.email_verified_at is None:
        membership.email_verified_at = timezone.now()
        membership.save(update_fields=["email_verified_at"])
        logger.info(
            "Customer %s: user %s verified their email address",
            membership.customer.slug,
            membership.user_id,
        )
    return membership


@transaction.atomic
def invitation_create(
    *, customer: Customer, email: str, invited_by: AbstractBaseUser | None
) -> tuple[Invitation, str]:
    """Create an invitation to `customer` and return it with its secret token.

    The token is returned once and only its digest is stored. An earlier
    pending invitation of the same address to the same customer is
    revoked. Raises ValidationError when a user with that address already
    belongs to a customer.
    """
    email = email.strip().lower()
    if Membership.objects.filter(user__email__iexact=email).exists():
        raise ValidationError({"email": f"{email} already has a portal account."})
    now = timezone.now()
    Invitation.objects.filter(
        customer=customer,
        email__iexact=email,
        accepted_at__isnull=True,
        revoked_at__isnull=True,
    ).update(revoked_at=now)
    token = secrets.token_urlsafe(32)
    invitation = Invitation.objects.create(
        customer=customer,
        email=email,
        token_hash=invitation_token_hash(token),
        invited_by=invited_by,
        expires_at=now + INVITATION_VALID_FOR,
    )
    logger.info("Customer %s: invitation %s created", customer.slug, invitation.pk)
    return invitation, token


def invitation_get_pending(token: str) -> Invitation:
    """Return the pending invitation of `token`, or raise InvitationInvalid."""
    invitation = (
        Invitation.objects.select_related("customer")
        .filter(token_hash=invitation_token_hash(token))
        .first()
    )
    if invitation is None:
        raise InvitationInvalid("This invitation link is not valid.")
    if invitation.accepted_at is not None:
        raise InvitationInvalid("This invitation has already been accepted.")
    if invitation.revoked_at is not None:
        raise InvitationInvalid("This invitation was withdrawn.")
    if invitation.expires_at <= timezone.now():
        raise InvitationInvalid("This invitation has expired. Ask for a new one.")
    return invitation


@transaction.atomic
def invitation_accept(*, invitation: Invitation, user: AbstractBaseUser) -> Membership:
    """Make `user` a member of the invitation's customer and close the invitation.

    The invitation row is locked, so one invitation makes one member.
    Raises InvitationInvalid when it was accepted, revoked or expired in
    the meantime.
    """
    invitation = Invitation.objects.select_for_update().get(pk=invitation.pk)
    if invitation.accepted_at is not None or invitation.revoked_at is not None:
        raise InvitationInvalid("This invitation is no longer valid.")
    if invitation.expires_at <= timezone.now():
        raise InvitationInvalid("This invitation has expired. Ask for a new one.")
    membership = membership_create(user=user, customer=invitation.customer)
    # The address received the link, so it is verified.
    membership.email_verified_at = timezone.now()
    membership.save(update_fields=["email_verified_at"])
    invitation.accepted_at = timezone.now()
    invitation.save(update_fields=["accepted_at"])
    return membership


def invitation_revoke(*, invitation: Invitation) -> Invitation:
    """Withdraw a pending invitation. An accepted or revoked one is left as is."""
    if invitation.accepted_at is None and invitation.revoked_at is None:
        invitation.revoked_at = timezone.now()
        invitation.save(update_fields=["revoked_at"])
        logger.info(
            "Customer %s: invitation %s revoked",
            invitation.customer.slug,
            invitation.pk,
        )
    return invitation
