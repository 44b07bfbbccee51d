"""The API's one error shape and the exception handler that produces it.

Every error response has the body
`{"error": {"code": ..., "message": ..., "field": ...}}`. `code` is one of
the stable codes below, `message` states what failed and what to do, and
`field` names the request field or parameter at fault, or is null.
"""

from __future__ import annotations

import logging

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response

logger = logging.getLogger(__name__)

# HTTP status of each stable code that the handler itself produces.
INVALID_REQUEST = "invalid_request"
MALFORMED_REQUEST = "malformed_request"
NOT_AUTHENTICATED = "not_authenticated"
AUTHENTICATION_FAILED = "authentication_failed"
PERMISSION_DENIED = "permission_denied"
NOT_FOUND = "not_found"
METHOD_NOT_ALLOWED = "method_not_allowed"
NOT_ACCEPTABLE = "not_acceptable"
UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
THROTTLED = "throttled"
SERVER_ERROR = "server_error"

DRF_CODES = [
    (exceptions.ValidationError, INVALID_REQUEST),
    (exceptions.ParseError, MALFORMED_REQUEST),
    (exceptions.NotAuthenticated, NOT_AUTHENTICATED),
    (exceptions.AuthenticationFailed, AUTHENTICATION_FAILED),
    (exceptions.PermissionDenied, PERMISSION_DENIED),
    (exceptions.NotFound, NOT_FOUND),
    (exceptions.MethodNotAllowed, METHOD_NOT_ALLOWED),
    (exceptions.NotAcceptable, NOT_ACCEPTABLE),
    (exceptions.UnsupportedMediaType, UNSUPPORTED_MEDIA_TYPE),
    (exceptions.Throttled, THROTTLED),
]


class ApiError(exceptions.APIException):
    """An error with its own stable code, HTTP status and optional field.

    Views raise it for domain errors, e.g.
    `ApiError(409, "execution_finished", "Execution 5 has finished.")`.
    """

    def __init__(self, status_code: int, code: str, message: str, *, field=None):
        super().__init__(detail=message, code=code)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.field = field


def error_body(code: str, message: str, field: str | None = None) -> dict:
    return {"error": {"code": code, "message": message, "field": field}}


def error_response(
    status_code: int, code: str, message: str, field: str | None = None, **kwargs
) -> Response:
    return Response(error_body(code, message, field), status=status_code, **kwargs)


def exception_handler(exc: Exception, context: dict) -> Response:
    """Turn any exception raised in an API view into the one error shape.

    An exception the API does not know becomes a 500 `server_error`, and
    is logged with its traceback.
    """
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, DjangoValidationError):
        field, message = first_django_error(exc)
        exc = ApiError(400, INVALID_REQUEST, message, field=field)

    if isinstance(exc, ApiError):
        return error_response(exc.status_code, exc.code, exc.message, exc.field)
    if isinstance(exc, exceptions.APIException):
        return _drf_error(exc)

    view = context.get("view")
    logger.error(
        "API view %s failed: %s",
        type(view).__name__ if view else None,
        exc,
        exc_info=exc,
    )
    return error_response(
        status.HTTP_500_INTERNAL_SERVER_ERROR,
        SERVER_ERROR,
        "The server failed to handle the request. Try again later; if it keeps "
        "failing, contact support.",
    )


def _drf_error(exc: exceptions.APIException) -> Response:
    code = next(
        (code for kind, code in DRF_CODES if isinstance(exc, kind)), INVALID_REQUEST
    )
    field, message = first_error(exc.detail)
    if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
        message = (
            f"Too many requests with this key; retry in {int(exc.wait) + 1} seconds."
        )
    headers = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    if getattr(exc, "wait", None) is not None:
        headers["Retry-After"] = str(int(exc.wait) + 1)
    return error_response(exc.status_code, code, message, field, headers=headers)


def first_error(detail, path: tuple[str, ...] = ()) -> tuple[str | None, str]:
    """Return the dotted field path and message of the first error in `detail`.

    DRF nests errors in dicts (by field) and lists (by item). Errors that
    belong to no field (`non_field_errors`) have no field.
    """
    if isinstance(detail, dict):
        for key, value in detail.items():
            sub_path = path if key == "non_field_errors" else (*path, str(key))
            return first_error(value, sub_path)
    elif isinstance(detail, list):
        for index, value in enumerate(detail):
            if value in ([], {}, ""):
                continue
            # A list of messages belongs to the field itself, not to an item.
            sub_path = (
                path if not isinstance(value, dict | list) else (*path, str(index))
            )
            return first_error(value, sub_path)
    else:
        return (".".join(path) or None), str(detail)
    return (".".join(path) or None), "The request is invalid."


def first_django_error(error: DjangoValidationError) -> tuple[str | None, str]:
    """Return the field and message of the first error of a Django ValidationError."""
    if hasattr(error, "error_dict"):
        for field, errors in error.message_dict.items():
            return (None if field == "__all__" else field), errors[0]
    return None, error.messages[0] if error.messages else "The request is invalid."
