"""Decorators that admit only a customer's portal users to a view."""

from __future__ import annotations

import functools

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import render

from portal import selectors


def customer_required(view):
    """Admit a signed-in user who belongs to a customer.

    Sets `request.membership` and `request.customer`. A signed-in user with
    no customer, such as a staff user, gets a 403 page explaining that.
    """

    @functools.wraps(view)
    def wrapped(request, *args, **kwargs):
        membership = selectors.membership_for_user(request.user)
        if membership is None:
            return render(request, "portal/no_customer.html", status=403)
        request.membership = membership
        request.customer = membership.customer
        return view(request, *args, **kwargs)

    return login_required(wrapped)


def owner_required(view):
    """Admit only the customer's owners. Others get 403."""

    @functools.wraps(view)
    def wrapped(request, *args, **kwargs):
        if not request.membership.is_owner:
            raise PermissionDenied("Only the account owner can do this.")
        return view(request, *args, **kwargs)

    return customer_required(wrapped)


def verified_required(view):
    """Admit only users whose email address is verified. Others get 403."""

    @functools.wraps(view)
    def wrapped(request, *args, **kwargs):
        if request.membership.email_verified_at is None:
            return render(request, "portal/verify_first.html", status=403)
        return view(request, *args, **kwargs)

    return customer_required(wrapped)
