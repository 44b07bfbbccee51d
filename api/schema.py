"""OpenAPI schema additions: the error shape on every operation, the auth schemes."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension

ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {
                    "type": "string",
                    "description": "Stable error code, e.g. `not_found`.",
                },
                "message": {
                    "type": "string",
                    "description": "What failed and what to do about it.",
                },
                "field": {
                    "type": "string",
                    "nullable": True,
                    "description": "Request field or parameter at fault, if any.",
                },
            },
            "required": ["code", "message", "field"],
        }
    },
    "required": ["error"],
}

# Statuses that any operation can return, with the error shape.
COMMON_ERRORS = {
    "400": "Invalid request (`invalid_request`, `malformed_request`).",
    "401": "Missing or invalid credentials.",
    "403": "The credentials may not use this endpoint.",
    "404": "Not found, or not this customer's.",
    "405": "Method not allowed.",
    "406": "The Accept header asks for a type the endpoint cannot send.",
    "415": "Unsupported request body type; send application/json.",
    "429": "Too many requests; see the Retry-After header.",
    "500": "Server error.",
}


def add_error_responses(result, generator, request, public):
    """Add the error component and document it on every operation.

    A drf-spectacular postprocessing hook (SPECTACULAR_SETTINGS).
    """
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = (
        ERROR_SCHEMA
    )
    reference = {"$ref": "#/components/schemas/Error"}
    for path_item in result.get("paths", {}).values():
        for operation in path_item.values():
            responses = operation.setdefault("responses", {})
            for status_code, description in COMMON_ERRORS.items():
                responses.setdefault(
                    status_code,
                    {
                        "description": description,
                        "content": {"application/json": {"schema": reference}},
                    },
                )
    return result


def error_response(description: str) -> dict:
    """Return an OpenAPI response object with the error shape, for `extend_schema`."""
    from drf_spectacular.utils import OpenApiResponse

    return OpenApiResponse(response=ERROR_SCHEMA, description=description)


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "customers.api.authentication.ApiKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A customer's API key: `Authorization: Bearer am_…`.",
        }
