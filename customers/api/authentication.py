"""Authentication of customers' systems by API key, and the permission that needs one."""

from __future__ import annotations

import logging

from rest_framework import authentication, exceptions, permissions

from customers.api_keys import ApiKeyInvalid, api_key_authenticate, api_key_touch
from customers.models import ApiKey, Customer

logger = logging.getLogger(__name__)

KEYWORD = "Bearer"


class ApiKeyUser:
    """The `request.user` of a request authenticated by API key.

    It is no Django user: it stands for the customer's system, so it has
    no permissions and is never staff.
    """

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False
    pk = None
    id = None

    def __init__(self, api_key: ApiKey):
        self.api_key = api_key

    @property
    def customer(self) -> Customer:
        return self.api_key.customer

    def has_perm(self, perm, obj=None) -> bool:
        return False

    def __str__(self):
        return f"API key {self.api_key.prefix}"


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer <key>`: sets request.auth to the ApiKey.

    A request without a Bearer header is left to the other authentication
    classes. A Bearer key that is malformed, unknown or revoked fails with
    401 `authentication_failed`.
    """

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].decode("latin-1").lower() != KEYWORD.lower():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed(
                "Invalid Authorization header: expected `Bearer <API key>`."
            )
        try:
            key = header[1].decode("ascii")
            api_key = api_key_authenticate(key)
        except (UnicodeDecodeError, ApiKeyInvalid) as exc:
            message = (
                str(exc)
                if isinstance(exc, ApiKeyInvalid)
                else "The API key is malformed."
            )
            raise exceptions.AuthenticationFailed(
                f"{message} Check the key, or create a new one."
            ) from None
        api_key_touch(api_key)
        return ApiKeyUser(api_key), api_key

    def authenticate_header(self, request):
        return f'{KEYWORD} realm="api"'


class HasApiKey(permissions.BasePermission):
    """Lets in requests authenticated by a customer's API key, and no others."""

    message = "This endpoint needs a customer's API key: `Authorization: Bearer <key>`."

    def has_permission(self, request, view):
        return isinstance(request.auth, ApiKey)


class IsStaff(permissions.BasePermission):
    """Lets in active staff users, by session or token."""

    message = "This endpoint is for staff users only."

    def has_permission(self, request, view):
        user = request.user
        return bool(
            user
            and user.is_authenticated
            and user.is_active
            and user.is_staff
            and not isinstance(request.auth, ApiKey)
        )


def request_customer(request) -> Customer:
    """Return the customer whose API key authenticated `request`."""
    return request.auth.customer
