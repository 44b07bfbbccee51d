"""Reconciliation with Anthropic's reports, through the real `anthropic` client.

The client talks to a local fake of the analytics endpoints
(tests/anthropic_fake), whose responses follow the SDK's own types.
"""

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from agents.models import ApiMessage, Execution, ModelPrice
from billing.anthropic import report
from billing.anthropic.reconcile import (
    anthropic_day_reprice,
    anthropic_reconcile,
    anthropic_reconcile_recent,
)
from billing.anthropic.report import ReportError
from billing.models import Alert, AnthropicAccount, AnthropicComparison
from billing.tasks import anthropic_reconcile as reconcile_task
from tests.anthropic_fake.server import FakeAnalytics
from tests.factories import CustomerFactory, ExecutionFactory

pytestmark = pytest.mark.django_db

DAY = date(2026, 11, 3)
SONNET = "claude-sonnet-4-5"
SONNET_DATED = "claude-sonnet-4-5-20250929"
HAIKU = "claude-haiku-4-5"


@pytest.fixture
def fake(settings):
    with FakeAnalytics() as server:
        settings.ANTHROPIC_ADMIN_API_KEY = server.api_key
        settings.ANTHROPIC_ADMIN_BASE_URL = server.url
        settings.ANTHROPIC_RECONCILE_THRESHOLD_PERCENT = "5"
        settings.ANTHROPIC_RECONCILE_MIN_DIFFERENCE_USD = "0.01"
        yield server


@pytest.fixture
def acme():
    customer = CustomerFactory(slug="acme")
    AnthropicAccount.objects.create(customer=customer, api_key_id="apikey_acme")
    return customer


def record(customer, model, cost, *, at=None, simulated=False, output=100):
    """Store one recorded API message of `customer` on DAY."""
    execution = ExecutionFactory(
        customer=customer,
        status=Execution.Status.SUCCEEDED,
        simulated=simulated,
    )
    ApiMessage.objects.create(
        execution=execution,
        message_id=f"msg_{ApiMessage.objects.count()}",
        sequence=1,
        model=model,
        input_tokens=1000,
        output_tokens=output,
        cost_usd=None if cost is None else Decimal(cost),
        arrived_at=at or datetime(2026, 11, 3, 12, tzinfo=UTC),
    )
    Execution.objects.filter(pk=execution.pk).update(
        cost_usd=Decimal(cost or 0), unpriced=cost is None
    )
    return execution


def comparison(customer, model):
    return AnthropicComparison.objects.get(day=DAY, customer=customer, model=model)


def test_matching_day_stores_zero_difference(fake, acme):
    record(acme, SONNET_DATED, "1.50")
    fake.add(
        day=DAY,
        model=SONNET,
        api_key_id="apikey_acme",
        cost_usd="1.50",
        uncached_input_tokens=1000,
        output_tokens=100,
    )
    result = anthropic_reconcile(day=DAY)
    assert len(result.comparisons) == 1
    row = comparison(acme, SONNET)
    assert row.our_cost_usd == Decimal("1.50")
    assert row.their_cost_usd == Decimal("1.50")
    assert row.difference_usd == Decimal(0)
    assert row.difference_percent == Decimal(0)
    assert row.our_prompt_tokens == row.their_prompt_tokens == 1000
    assert row.our_output_tokens == row.their_output_tokens == 100
    assert not row.above_threshold
    assert Alert.objects.count() == 0


def test_requests_use_sdk_shape(fake, acme):
    anthropic_reconcile(day=DAY)
    paths = [request["path"] for request in fake.requests]
    assert paths == [
        "/v1/organizations/analytics/cost",
        "/v1/organizations/analytics/usage",
    ]
    query = fake.requests[0]["query"]
    assert query["group_by[]"] == ["model", "api_key_id", "workspace_id"]
    assert query["starting_at"] == ["2026-11-03T00:00:00+00:00"]
    assert query["ending_at"] == ["2026-11-04T00:00:00+00:00"]


def test_pagination_reads_every_page(fake, acme, monkeypatch):
    monkeypatch.setattr(report, "PAGE_SIZE", 2)
    for index in range(5):
        fake.add(
            day=DAY,
            model=SONNET,
            api_key_id="apikey_acme",
            workspace_id=f"wrkspc_{index}",
            cost_usd="0.25",
            output_tokens=10,
        )
    record(acme, SONNET, "1.25", output=50)
    anthropic_reconcile(day=DAY)
    cost_requests = [r for r in fake.requests if r["path"].endswith("/cost")]
    assert len(cost_requests) == 3
    assert cost_requests[1]["query"]["page"] == ["page_2"]
    row = comparison(acme, SONNET)
    assert row.their_cost_usd == Decimal("1.25")
    assert row.their_output_tokens == 50
    assert not row.above_threshold


def test_empty_day_stores_nothing(fake, acme):
    out = StringIO()
    call_command("reconcile_anthropic", "--date=2026-11-03", stdout=out)
    assert "no usage recorded by us or reported by Anthropic" in out.getvalue()
    assert AnthropicComparison.objects.count() == 0
    assert Alert.objects.count() == 0


def test_variance_above_threshold_raises_one_alert(fake, acme):
    record(acme, SONNET, "1.00")
    fake.add(day=DAY, model=SONNET, api_key_id="apikey_acme", cost_usd="1.20")
    first = anthropic_reconcile(day=DAY)
    second = anthropic_reconcile(day=DAY)
    assert first.alerts_raised == 1
    assert second.alerts_raised == 0
    alert = Alert.objects.get()
    assert alert.kind == Alert.Kind.ANTHROPIC_VARIANCE
    assert alert.customer == acme
    assert "-16.6667%" in alert.message
    row = comparison(acme, SONNET)
    assert row.difference_usd == Decimal("-0.20")
    assert row.difference_percent == Decimal("-16.6667")
    assert row.above_threshold
    assert AnthropicComparison.objects.count() == 1


def test_variance_within_threshold_no_alert(fake, acme):
    record(acme, SONNET, "1.00")
    fake.add(day=DAY, model=SONNET, api_key_id="apikey_acme", cost_usd="1.04")
    anthropic_reconcile(day=DAY)
    assert not comparison(acme, SONNET).above_threshold
    assert Alert.objects.count() == 0


def test_unmapped_usage_shown_as_such(fake, acme):
    globex = CustomerFactory(slug="globex")
    record(acme, SONNET, "1.00")
    record(globex, HAIKU, "0.30")
    fake.add(day=DAY, model=SONNET, api_key_id="apikey_acme", cost_usd="1.00")
    fake.add(day=DAY, model=HAIKU, api_key_id="apikey_other", cost_usd="0.30")
    result = anthropic_reconcile(day=DAY)
    assert len(result.comparisons) == 2
    unmapped = comparison(None, HAIKU)
    # globex has no mapping, so its usage is set against the unmapped key.
    assert unmapped.our_cost_usd == Decimal("0.30")
    assert unmapped.their_cost_usd == Decimal("0.30")
    assert comparison(acme, SONNET).difference_usd == Decimal(0)


def test_workspace_mapping_attributes_rows(fake, acme):
    globex = CustomerFactory(slug="globex")
    AnthropicAccount.objects.create(customer=globex, workspace_id="wrkspc_globex")
    record(globex, HAIKU, "0.50")
    fake.add(
        day=DAY,
        model=HAIKU,
        api_key_id="apikey_unknown",
        workspace_id="wrkspc_globex",
        cost_usd="0.50",
    )
    anthropic_reconcile(day=DAY)
    assert comparison(globex, HAIKU).their_cost_usd == Decimal("0.50")
    assert not AnthropicComparison.objects.filter(customer=None).exists()


def test_missing_side_compared_with_zero(fake, acme):
    record(acme, HAIKU, "0.40")
    fake.add(day=DAY, model=SONNET, api_key_id="apikey_acme", cost_usd="2.00")
    result = anthropic_reconcile(day=DAY)
    assert result.alerts_raised == 2
    ours_only = comparison(acme, HAIKU)
    assert ours_only.their_cost_usd == Decimal(0)
    assert ours_only.difference_percent is None
    theirs_only = comparison(acme, SONNET)
    assert theirs_only.difference_percent == Decimal("-100")


def test_simulated_and_other_days_left_out(fake, acme):
    record(acme, SONNET, "1.00", simulated=True)
    record(acme, SONNET, "3.00", at=datetime(2026, 11, 4, 0, tzinfo=UTC))
    record(acme, SONNET, "2.00", at=datetime(2026, 11, 3, 23, 59, tzinfo=UTC))
    fake.add(day=DAY, model=SONNET, api_key_id="apikey_acme", cost_usd="2.00")
    anthropic_reconcile(day=DAY)
    assert comparison(acme, SONNET).our_cost_usd == Decimal("2.00")


def test_unpriced_messages_counted(fake, acme):
    record(acme, "claude-imaginary-9", None)
    anthropic_reconcile(day=DAY)
    row = comparison(acme, "claude-imaginary-9")
    assert row.our_unpriced_messages == 1
    assert row.our_cost_usd == Decimal(0)


def test_recorded_costs_never_overwritten(fake, acme):
    execution = record(acme, SONNET, "1.00")
    fake.add(day=DAY, model=SONNET, api_key_id="apikey_acme", cost_usd="9.00")
    anthropic_reconcile(day=DAY)
    execution.refresh_from_db()
    assert execution.cost_usd == Decimal("1.00")
    assert ApiMessage.objects.get(execution=execution).cost_usd == Decimal("1.00")


def test_reprice_day_uses_updated_prices(fake, acme):
    # 1,000 input and 100 output tokens of Haiku at list price: $0.0015.
    execution = record(acme, HAIKU, "0.0015")
    fake.add(day=DAY, model=HAIKU, api_key_id="apikey_acme", cost_usd="0.0030")
    anthropic_reconcile(day=DAY)
    requests_before = len(fake.requests)
    ModelPrice.objects.create(
        model=HAIKU,
        valid_from=datetime(2026, 11, 1, tzinfo=UTC),
        input_per_mtok=Decimal("2"),
        output_per_mtok=Decimal("10"),
        cache_write_5m_per_mtok=Decimal("2.5"),
        cache_write_1h_per_mtok=Decimal("4"),
        cache_read_per_mtok=Decimal("0.2"),
    )
    repriced, result = anthropic_day_reprice(day=DAY)
    assert repriced.messages_changed == 1
    assert len(fake.requests) == requests_before
    execution.refresh_from_db()
    assert execution.cost_usd == Decimal("0.003")
    row = comparison(acme, HAIKU)
    assert row.our_cost_usd == Decimal("0.003")
    assert row.their_cost_usd == Decimal("0.0030")
    assert row.difference_usd == Decimal(0)
    assert result.our_cost_usd == Decimal("0.003")


def test_rejected_key_stores_nothing(fake, acme, settings):
    settings.ANTHROPIC_ADMIN_API_KEY = "sk-ant-admin-wrong"
    record(acme, SONNET, "1.00")
    with pytest.raises(ReportError, match="failed"):
        anthropic_reconcile(day=DAY)
    assert AnthropicComparison.objects.count() == 0


def test_command_json_output(fake, acme):
    record(acme, SONNET, "1.00")
    fake.add(day=DAY, model=SONNET, api_key_id="apikey_acme", cost_usd="1.50")
    out = StringIO()
    call_command("reconcile_anthropic", "--date=2026-11-03", "--json", stdout=out)
    summary = json.loads(out.getvalue())
    assert summary["day"] == "2026-11-03"
    assert summary["alerts_raised"] == 1
    [row] = summary["comparisons"]
    assert row["customer"] == "acme"
    assert row["our_cost_usd"] == "1"
    assert row["their_cost_usd"] == "1.5"
    assert row["difference_percent"] == "-33.3333"
    assert row["above_threshold"] is True


def test_command_without_key_fails(settings):
    settings.ANTHROPIC_ADMIN_API_KEY = ""
    with pytest.raises(CommandError, match="ANTHROPIC_ADMIN_API_KEY is empty"):
        call_command("reconcile_anthropic", "--date=2026-11-03")
    with pytest.raises(CommandError, match="Invalid --date"):
        call_command("reconcile_anthropic", "--date=03/11/2026")


def test_task_skips_without_key(settings):
    settings.ANTHROPIC_ADMIN_API_KEY = ""
    assert reconcile_task() == {"skipped": "ANTHROPIC_ADMIN_API_KEY is empty"}


def test_recent_days_reconciled(fake, acme):
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date()
    fake.add(day=yesterday, model=SONNET, api_key_id="apikey_acme", cost_usd="1")
    summary = anthropic_reconcile_recent(days=2)
    assert len(summary["days"]) == 2
    assert summary["days"][-1] == yesterday.isoformat()
    assert summary["alerts_raised"] == 1
    assert summary["failed"] == []


def test_threshold_setting_validated(fake, acme, settings):
    from django.core.exceptions import ImproperlyConfigured

    settings.ANTHROPIC_RECONCILE_THRESHOLD_PERCENT = "five"
    with pytest.raises(ImproperlyConfigured, match="THRESHOLD_PERCENT"):
        anthropic_reconcile(day=DAY)


def test_admin_lists_and_reprices(fake, acme, admin_client):
    record(acme, SONNET, "1.00")
    fake.add(day=DAY, model=SONNET, api_key_id="apikey_acme", cost_usd="1.00")
    anthropic_reconcile(day=DAY)
    url = "/admin/billing/anthropiccomparison/"
    page = admin_client.get(url)
    assert page.status_code == 200
    assert b"claude-sonnet-4-5" in page.content
    row = comparison(acme, SONNET)
    response = admin_client.post(
        url,
        {"action": "reprice_days", "_selected_action": [row.pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert b"messages repriced" in response.content
    assert admin_client.get("/admin/billing/anthropicaccount/").status_code == 200
