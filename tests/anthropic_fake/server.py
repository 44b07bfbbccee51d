"""A local fake of Anthropic's usage and cost analytics endpoints.

It serves `GET /v1/organizations/analytics/usage` and `.../cost` on
127.0.0.1 with the JSON shapes of the `anthropic` SDK's own types
(`BetaAnalyticsUsageItem`, `BetaAnalyticsCostItem`, `SyncReportPageCursor`),
so the real client parses its responses. Rows are added per UTC day and
grouped by the request's `group_by[]`; pages hold `limit` rows.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

BETA = "analytics-usage-cost-2026-08-24"
DIMENSIONS = ("model", "api_key_id", "workspace_id")
DEFAULT_LIMIT = 20


@dataclasses.dataclass
class FakeRow:
    day: date
    model: str | None
    api_key_id: str | None
    workspace_id: str | None
    cost_cents: Decimal
    list_cost_cents: Decimal
    uncached_input_tokens: int
    cache_write_5m_tokens: int
    cache_write_1h_tokens: int
    cache_read_tokens: int
    output_tokens: int
    requests: int


class FakeAnalytics:
    """The fake server; use it as a context manager and read `url`."""

    def __init__(self, api_key: str = "sk-ant-admin-test"):
        self.api_key = api_key
        self.rows: list[FakeRow] = []
        self.requests: list[dict] = []
        self._server: ThreadingHTTPServer | None = None

    def add(
        self,
        *,
        day: date,
        model: str | None,
        cost_usd: str,
        api_key_id: str | None = None,
        workspace_id: str | None = None,
        list_cost_usd: str | None = None,
        uncached_input_tokens: int = 0,
        cache_write_5m_tokens: int = 0,
        cache_write_1h_tokens: int = 0,
        cache_read_tokens: int = 0,
        output_tokens: int = 0,
        requests: int = 1,
    ) -> None:
        """Add usage billed at `cost_usd` (a decimal string) to `day`."""
        cents = Decimal(cost_usd) * 100
        self.rows.append(
            FakeRow(
                day=day,
                model=model,
                api_key_id=api_key_id,
                workspace_id=workspace_id,
                cost_cents=cents,
                list_cost_cents=Decimal(list_cost_usd) * 100
                if list_cost_usd
                else cents,
                uncached_input_tokens=uncached_input_tokens,
                cache_write_5m_tokens=cache_write_5m_tokens,
                cache_write_1h_tokens=cache_write_1h_tokens,
                cache_read_tokens=cache_read_tokens,
                output_tokens=output_tokens,
                requests=requests,
            )
        )

    @property
    def url(self) -> str:
        assert self._server is not None, "the fake is not running"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeAnalytics:
        fake = self

        class Handler(_Handler):
            analytics = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc_info) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()
        self._server = None


class _Handler(BaseHTTPRequestHandler):
    analytics: FakeAnalytics

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass

    def do_GET(self):  # noqa: N802 - the base class's name
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        self.analytics.requests.append(
            {"path": parts.path, "query": query, "headers": dict(self.headers)}
        )
        # The SDK sends the key as a bearer token; x-api-key is also accepted.
        bearer = (self.headers.get("authorization") or "").removeprefix("Bearer ")
        if self.analytics.api_key not in (bearer, self.headers.get("x-api-key")):
            return self._error(401, "authentication_error", "invalid API key")
        if BETA not in (self.headers.get("anthropic-beta") or ""):
            return self._error(400, "invalid_request_error", f"missing beta {BETA}")
        kind = parts.path.removeprefix("/v1/organizations/analytics/")
        if kind not in ("usage", "cost"):
            return self._error(404, "not_found_error", f"no route {parts.path}")
        try:
            start = _moment(query["starting_at"][0])
            end = _moment(query["ending_at"][0]) if "ending_at" in query else None
        except (KeyError, ValueError):
            return self._error(400, "invalid_request_error", "invalid starting_at")
        end = end or start + timedelta(days=31)
        group_by = query.get("group_by[]", []) + query.get("group_by", [])
        unknown = [name for name in group_by if name not in DIMENSIONS]
        if unknown:
            return self._error(400, "invalid_request_error", f"unsupported {unknown}")
        limit = int(query.get("limit", [DEFAULT_LIMIT])[0])
        offset = int(query.get("page", ["0"])[0].removeprefix("page_") or 0)
        items = _items(self.analytics.rows, kind, start, end, group_by)
        page = items[offset : offset + limit]
        more = offset + limit < len(items)
        self._json(
            200,
            {
                "data": page,
                "has_more": more,
                "next_page": f"page_{offset + limit}" if more else None,
                "data_refreshed_at": datetime.now(UTC).isoformat(),
            },
        )

    def _error(self, status: int, kind: str, message: str):
        self._json(
            status, {"type": "error", "error": {"type": kind, "message": message}}
        )

    def _json(self, status: int, body: dict):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _items(rows, kind, start, end, group_by) -> list[dict]:
    groups: dict[tuple, list[FakeRow]] = {}
    for row in rows:
        moment = datetime.combine(row.day, time.min, tzinfo=UTC)
        if not start <= moment < end:
            continue
        key = tuple(
            getattr(row, name) if name in group_by else None for name in DIMENSIONS
        )
        groups.setdefault(key, []).append(row)
    span = {
        "starting_at": start.replace(minute=0, second=0, microsecond=0).isoformat(),
        "ending_at": end.replace(minute=0, second=0, microsecond=0).isoformat(),
    }
    items = []
    for key, members in groups.items():
        group = dict(zip(DIMENSIONS, key, strict=True))
        if kind == "cost":
            metrics = {
                "amount": str(sum(r.cost_cents for r in members)),
                "currency": "USD",
                "list_amount": str(sum(r.list_cost_cents for r in members)),
                "requests": sum(r.requests for r in members),
            }
            items.append({**span, "group": group, "cost": metrics})
        else:
            write_5m = sum(r.cache_write_5m_tokens for r in members)
            write_1h = sum(r.cache_write_1h_tokens for r in members)
            uncached = sum(r.uncached_input_tokens for r in members)
            read = sum(r.cache_read_tokens for r in members)
            output = sum(r.output_tokens for r in members)
            metrics = {
                "cache_creation": {
                    "ephemeral_5m_input_tokens": write_5m,
                    "ephemeral_1h_input_tokens": write_1h,
                },
                "cache_read_input_tokens": read,
                "output_tokens": output,
                "requests": sum(r.requests for r in members),
                "server_tool_use": {"web_search_requests": 0},
                "total_tokens": uncached + write_5m + write_1h + read + output,
                "uncached_input_tokens": uncached,
            }
            items.append({**span, "group": group, "usage": metrics})
    # Ranked by the default order_by metric, highest first.
    if kind == "cost":
        items.sort(key=lambda item: -Decimal(item["cost"]["amount"]))
    else:
        items.sort(key=lambda item: -item["usage"]["total_tokens"])
    return items
