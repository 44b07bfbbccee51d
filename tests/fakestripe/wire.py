"""Stripe's wire format: bracket-encoded forms, JSON bodies and error shapes."""

import json
import secrets
from decimal import Decimal
from urllib.parse import parse_qsl

V1_ERROR_DOCS = "https://docs.stripe.com/error-codes"


class FakeStripeError(Exception):
    """An error response, raised by a handler and rendered in Stripe's shape.

    ``stored`` marks an error that Stripe keeps as the idempotent result of
    the request. Validation errors are not stored, so a corrected retry with
    the same key runs again.
    """

    def __init__(
        self,
        message,
        *,
        status=400,
        type="invalid_request_error",
        code=None,
        param=None,
        headers=None,
        stored=False,
    ):
        super().__init__(message)
        self.message = message
        self.status = status
        self.type = type
        self.code = code
        self.param = param
        self.headers = dict(headers or {})
        self.stored = stored

    def body(self):
        error = {"type": self.type, "message": self.message}
        if self.code is not None:
            error["code"] = self.code
            error["doc_url"] = f"{V1_ERROR_DOCS}#{self.code.replace('_', '-')}"
        if self.param is not None:
            error["param"] = self.param
        return {"error": error}


def not_found(kind, object_id, param="id"):
    return FakeStripeError(
        f"No such {kind}: '{object_id}'",
        status=404,
        code="resource_missing",
        param=param,
    )


def invalid(message, param=None, code="parameter_invalid"):
    return FakeStripeError(message, code=code, param=param)


def unsupported(param, where):
    """Reject a parameter that Stripe accepts but this fake does not act on.

    Accepting it silently would let a test pass while the fake ignores what
    the code asked for.
    """
    return FakeStripeError(
        f"The fake Stripe does not implement parameter {param} on {where}; "
        "extend tests/fakestripe if the code needs it.",
        code="fake_parameter_not_implemented",
        param=param,
    )


def decode_form(text):
    """Decode ``a[b][0][c]=x`` pairs into nested dicts and lists of strings."""
    root = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        parts = _split_key(key)
        node = root
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[parts[-1]] = value
    return _listify(root)


def _split_key(key):
    head, bracket, rest = key.partition("[")
    parts = [head]
    if bracket:
        parts.extend(rest.rstrip("]").split("]["))
    return parts


def _listify(node):
    """Turn dicts keyed "0", "1", ... into lists, as stripe-python encodes lists."""
    if not isinstance(node, dict):
        return node
    converted = {key: _listify(value) for key, value in node.items()}
    keys = list(converted)
    if keys and keys == [str(index) for index in range(len(keys))]:
        return [converted[key] for key in keys]
    return converted


def decode_json(raw):
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise invalid(f"Invalid JSON body: {exc}") from exc
    if not isinstance(value, dict):
        raise invalid("Invalid JSON body: expected an object.")
    return value


def encode_json(value):
    return json.dumps(value, default=_json_default, sort_keys=False).encode()


def _json_default(value):
    if isinstance(value, Decimal):
        if value == value.to_integral_value():
            return int(value)
        # NOTE: a fractional Decimal leaves as a JSON float, as Stripe's own
        # number fields do; the fake keeps the exact value in its store.
        return float(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def new_id(prefix, length=24):
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return prefix + "".join(secrets.choice(alphabet) for _ in range(length))
