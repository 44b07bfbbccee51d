"""Base settings of the API's views, and the 404 of unknown API paths."""

from django.http import JsonResponse
from rest_framework.authentication import SessionAuthentication, TokenAuthentication

from api.errors import NOT_FOUND, error_body
from api.throttling import ApiKeyRateThrottle, StaffRateThrottle
from customers.api.authentication import ApiKeyAuthentication, HasApiKey, IsStaff


class CustomerApiView:
    """Mixin of the endpoints customers' systems call, with their API key."""

    authentication_classes = [ApiKeyAuthentication]
    permission_classes = [HasApiKey]
    throttle_classes = [ApiKeyRateThrottle]


class StaffApiView:
    """Mixin of the staff endpoints: a staff session or DRF token.

    API keys are accepted as credentials only to return 403 rather than
    401: a customer's key is valid but may not use these endpoints.
    """

    authentication_classes = [
        TokenAuthentication,
        SessionAuthentication,
        ApiKeyAuthentication,
    ]
    permission_classes = [IsStaff]
    throttle_classes = [StaffRateThrottle]


def unknown_endpoint(request, *args, **kwargs):
    """Return the API's 404 for a path under /api/v1/ that no endpoint has."""
    return JsonResponse(
        error_body(
            NOT_FOUND,
            f"No endpoint at {request.path}. See /api/docs/ for the endpoints.",
        ),
        status=404,
    )
