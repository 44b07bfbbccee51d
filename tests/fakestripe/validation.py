"""Check request parameters against stripe-python's generated TypedDicts.

``stripe.params`` describes every endpoint's parameters as TypedDicts. A v1
form body arrives as strings, so each value is also converted to the type
that the TypedDict names (int, bool, Decimal, list or nested dict). A v2 JSON
body must already carry the right JSON types.
"""

import functools
import sys
import types
import typing
from decimal import Decimal, InvalidOperation

import typing_extensions
from stripe._request_options import RequestOptions
from stripe._stripe_object import UntypedStripeObject

from .wire import FakeStripeError

_OPTION_KEYS = frozenset(RequestOptions.__annotations__)
_WRAPPERS = (typing.NotRequired, typing.Required)


def validate(params, params_class, *, form):
    """Return ``params`` converted to ``params_class``'s types, or raise 400."""
    return _check_typed_dict(params, params_class, "", form=form)


@functools.cache
def _hints(typed_dict):
    """Evaluate a TypedDict's annotations, leaving out the client-side options."""
    namespace = vars(sys.modules[typed_dict.__module__])
    hints = {}
    for key, annotation in typed_dict.__annotations__.items():
        if key in _OPTION_KEYS and typed_dict is not RequestOptions:
            continue
        if isinstance(annotation, str):
            annotation = typing.ForwardRef(annotation)
        hints[key] = typing._eval_type(annotation, namespace, None)
    return hints


def _unwrap(hint):
    while typing.get_origin(hint) in _WRAPPERS:
        hint = typing.get_args(hint)[0]
    return hint


def _is_typed_dict(hint):
    # stripe-python builds its TypedDicts with typing_extensions, which
    # typing.is_typeddict does not recognise on Python 3.11.
    return isinstance(hint, type) and typing_extensions.is_typeddict(hint)


def _join(path, key):
    return f"{path}[{key}]" if path else str(key)


def _check_typed_dict(value, typed_dict, path, *, form):
    if form and value == "":
        value = {}
    if not isinstance(value, dict):
        raise _invalid(f"Invalid object for {path or 'request body'}.", path)
    hints = _hints(typed_dict)
    for key in value:
        if key not in hints:
            param = _join(path, key)
            raise FakeStripeError(
                f"Received unknown parameter: {param}",
                code="parameter_unknown",
                param=param,
            )
    for key in typed_dict.__required_keys__:
        if key in hints and key not in value:
            param = _join(path, key)
            raise FakeStripeError(
                f"Missing required param: {param}.",
                code="parameter_missing",
                param=param,
            )
    return {
        key: _coerce(item, hints[key], _join(path, key), form=form)
        for key, item in value.items()
    }


def _coerce(value, hint, path, *, form):
    hint = _unwrap(hint)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, typing.get_args(hint), path, form=form)
    if _is_typed_dict(hint):
        return _check_typed_dict(value, hint, path, form=form)
    if origin is typing.Literal:
        return _coerce_literal(value, typing.get_args(hint), path)
    if origin is list:
        return _coerce_list(value, typing.get_args(hint)[0], path, form=form)
    if origin is dict or origin is UntypedStripeObject:
        return _coerce_map(value, typing.get_args(hint)[-1], path, form=form)
    if hint is typing.Any:
        return value
    return _coerce_scalar(value, hint, path, form=form)


def _coerce_union(value, options, path, *, form):
    literals = [o for o in options if typing.get_origin(_unwrap(o)) is typing.Literal]
    others = [o for o in options if o not in literals]
    allowed = [a for o in literals for a in typing.get_args(_unwrap(o))]
    if value in allowed:
        return value
    # "Literal['a', 'b']|str" is how stripe-python keeps room for future enum
    # values, but this API version accepts only the listed ones.
    if literals and others == [str] and isinstance(value, str):
        raise _invalid(
            f"Invalid {path}: must be one of {', '.join(map(str, allowed))}",
            path,
        )
    first_error = None
    for option in others:
        try:
            return _coerce(value, option, path, form=form)
        except FakeStripeError as exc:
            first_error = first_error or exc
    if first_error is None:
        raise _invalid(f"Invalid value for {path}.", path)
    raise first_error


def _coerce_literal(value, allowed, path):
    if value in allowed:
        return value
    raise _invalid(
        f"Invalid {path}: must be one of {', '.join(map(str, allowed))}", path
    )


def _coerce_list(value, item_hint, path, *, form):
    if form and value == "":
        return []
    if isinstance(value, dict) and form:
        value = [value[key] for key in sorted(value, key=_index_key)]
    if not isinstance(value, list):
        raise _invalid(f"Invalid array for {path}.", path, "parameter_invalid_array")
    return [
        _coerce(item, item_hint, _join(path, index), form=form)
        for index, item in enumerate(value)
    ]


def _index_key(key):
    return int(key) if str(key).isdigit() else -1


def _coerce_map(value, item_hint, path, *, form):
    if form and value == "":
        return ""
    if isinstance(value, list):
        value = {str(index): item for index, item in enumerate(value)}
    if not isinstance(value, dict):
        raise _invalid(f"Invalid hash for {path}.", path)
    return {
        key: _coerce(item, item_hint, _join(path, key), form=form)
        for key, item in value.items()
    }


def _coerce_scalar(value, hint, path, *, form):
    if hint is bool:
        if isinstance(value, bool):
            return value
        if form and value in ("true", "false"):
            return value == "true"
        raise _invalid(f"Invalid boolean: {value}", path, "parameter_invalid_boolean")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if form and isinstance(value, str) and value.lstrip("-").isdigit():
            return int(value)
        raise _invalid(f"Invalid integer: {value}", path, "parameter_invalid_integer")
    if hint is Decimal or hint is float:
        if isinstance(value, (int, str)) and not isinstance(value, bool):
            try:
                return Decimal(str(value))
            except InvalidOperation:
                pass
        raise _invalid(f"Invalid decimal: {value}", path, "parameter_invalid_decimal")
    if hint is str:
        if isinstance(value, str):
            return value
        raise _invalid(f"Invalid string: {value!r}", path, "parameter_invalid_string")
    # A type this checker does not know (a file handle, say) passes through.
    return value


def _invalid(message, path, code="parameter_invalid"):
    return FakeStripeError(message, code=code, param=path or None)
