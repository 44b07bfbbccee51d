"""List pagination, the search query language and ``expand`` for responses."""

import copy
import re

from .objects import list_object
from .wire import FakeStripeError

_CLAUSE = re.compile(
    r"""^\s*(-?)(?P<field>[a-z_]+(?:\[(?P<q1>['"])(?P<key>[^'"]+)(?P=q1)\])?)\s*"""
    r"""(?P<op>:|~)\s*(?P<value>(?P<q2>['"])(?P<text>.*?)(?P=q2)|[^\s]+)\s*$"""
)


def paginate(objects, params, url):
    """Return a Stripe list of ``objects`` (oldest first), newest first.

    Supports ``limit`` (default 10, at most 100), ``starting_after`` and
    ``ending_before`` by object id, as stripe-python's auto-pager sends them.
    """
    ordered = list(reversed(objects))
    limit = params.get("limit", 10)
    if not 1 <= limit <= 100:
        raise FakeStripeError(
            "Invalid limit: must be between 1 and 100",
            code="parameter_invalid",
            param="limit",
        )
    ids = [obj["id"] for obj in ordered]
    if params.get("starting_after"):
        start = _position(ids, params["starting_after"], "starting_after") + 1
        page = ordered[start : start + limit]
        has_more = start + limit < len(ordered)
    elif params.get("ending_before"):
        end = _position(ids, params["ending_before"], "ending_before")
        page = ordered[max(0, end - limit) : end]
        has_more = end - limit > 0
    else:
        page = ordered[:limit]
        has_more = len(ordered) > limit
    return list_object(page, url, has_more)


def _position(ids, object_id, param):
    try:
        return ids.index(object_id)
    except ValueError:
        raise FakeStripeError(
            f"No such object: '{object_id}'",
            status=404,
            code="resource_missing",
            param=param,
        ) from None


def search(objects, params, url):
    """Filter by a Stripe search query such as ``metadata['plan']:'pro'``.

    Supports the ``:`` (exact) and ``~`` (substring) operators, negation with
    ``-`` and ``metadata['key']`` fields. Clauses are joined by ``AND`` or by
    ``OR``, not both. Results come newest first, without a next page.
    """
    query = params["query"]
    joiner = " OR " if " OR " in query else " AND "
    clauses = [_parse_clause(text) for text in query.split(joiner)]
    combine = any if joiner == " OR " else all
    found = [
        obj
        for obj in reversed(objects)
        if combine(_matches(obj, clause) for clause in clauses)
    ]
    limit = params.get("limit", 10)
    return {
        "object": "search_result",
        "data": found[:limit],
        "has_more": len(found) > limit,
        "next_page": None,
        "url": url,
    }


def _parse_clause(text):
    match = _CLAUSE.match(text)
    if not match:
        raise FakeStripeError(
            f"Invalid search query clause: {text.strip()!r}.", param="query"
        )
    value = match["text"] if match["q2"] else match["value"]
    field = match["field"].split("[")[0]
    return {
        "negate": bool(match.group(1)),
        "field": field,
        "key": match["key"],
        "op": match["op"],
        "value": value,
    }


def _matches(obj, clause):
    actual = obj.get(clause["field"])
    if clause["key"] is not None:
        actual = (actual or {}).get(clause["key"])
    if isinstance(actual, bool):
        actual = "true" if actual else "false"
    elif isinstance(actual, int):
        actual = str(actual)
    if actual is None:
        result = False
    elif clause["op"] == "~":
        result = clause["value"].lower() in str(actual).lower()
    else:
        result = str(actual) == clause["value"]
    return result != clause["negate"]


def render(obj, expand, expanders):
    """Copy ``obj`` for a response, applying the ``expand`` paths it supports.

    ``expanders`` maps a path such as ``"latest_invoice"`` to a function that
    fills it in or, when the path was not requested, removes a field that
    Stripe sends only when expanded.
    """
    result = copy.deepcopy(obj)
    for path, expander in expanders.items():
        expander(result, path in expand)
    return result


def strip_prefix(expand, prefix):
    """Return the expand paths under ``prefix`` (``"data."`` for lists)."""
    return [path[len(prefix) :] for path in expand if path.startswith(prefix)]
