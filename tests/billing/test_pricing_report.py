import json
import re
from datetime import date
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from agents.models import Execution
from billing.models import Plan
from billing.rollups import roll_up_usage
from billing.services import subscription_create
from tests.billing.usage import add_message, at, make_execution
from tests.factories import CustomerFactory, WorkflowFactory

pytestmark = pytest.mark.django_db

D = Decimal


def report(*args) -> str:
    out = StringIO()
    call_command("pricing_report", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def april_usage():
    """Two customers in April 2025: one profitable, one below cost."""
    workflow = WorkflowFactory(slug="review", model="claude-sonnet-4-6")
    for slug, price in (("acme", "0.50"), ("globex", "0.10")):
        plan = Plan(
            name=f"Usage {slug}",
            slug=f"usage-{slug}",
            billing_model=Plan.BillingModel.USAGE,
            usage_pricing=Plan.UsagePricing.PER_EXECUTION,
            price_per_execution=D(price),
        )
        plan.full_clean()
        plan.save()
        customer = CustomerFactory(slug=slug)
        subscription_create(customer=customer, plan=plan, start=date(2025, 4, 1))
        for cost in ("0.20", "0.40"):
            execution = make_execution(customer, workflow, at("2025-04-10T12:00"))
            add_message(execution, workflow.model, at("2025-04-10T12:00"), D(cost))
            Execution.objects.filter(pk=execution.pk).update(cost_usd=D(cost))
    roll_up_usage(full=True)


def test_report_table(april_usage):
    output = report("--period", "2025-04")
    assert "Pricing report for 2025-04, target margin 0.7" in output
    lines = output.splitlines()
    acme = next(line for line in lines if line.strip().startswith("acme"))
    globex = next(line for line in lines if line.strip().startswith("globex"))
    # acme: 2 x 0.50 = 1.00 revenue, 0.60 cost.
    assert "1.00" in acme
    assert "40.00%" in acme
    assert "UNPROFITABLE" not in acme
    # globex: 2 x 0.10 = 0.20 revenue, 0.60 cost.
    assert "-0.40" in globex
    assert "UNPROFITABLE" in globex
    # Lowest margin first.
    assert lines.index(globex) < lines.index(acme)
    assert "Cost per execution and suggested prices" in output


def test_report_json(april_usage):
    document = json.loads(report("--period", "2025-04", "--json"))
    assert document["period"] == "2025-04"
    assert document["target_margin"] == "0.7"
    customers = {row["customer"]: row for row in document["customers"]}
    assert customers["acme"]["revenue"] == "1.00"
    assert customers["acme"]["cost"] == "0.60"
    assert customers["acme"]["margin_percent"] == "40.00%"
    assert customers["globex"]["flag"] == "UNPROFITABLE"
    # A closed month: projections equal the figures.
    assert customers["acme"]["projected_cost"] == "0.60"
    workflows = {row["name"]: row for row in document["allocations"]["workflows"]}
    assert workflows["review"]["revenue"] == "1.20"
    assert workflows["review"]["cost"] == "1.20"
    # A margin of exactly 0 is not a loss.
    assert workflows["review"]["flag"] == ""
    (prices,) = document["workflow_prices"]
    assert prices["workflow"] == "review"
    assert prices["executions"] == 4
    assert prices["cost_mean"] == "0.300000"
    assert prices["cost_median"] == "0.300000"
    # Costs 0.20, 0.20, 0.40, 0.40: position 3 x 0.95 falls between the 0.40s.
    assert prices["cost_p95"] == "0.400000"
    # 0.30 / (1 - 0.7) = 1.00.
    assert prices["price_per_execution"] == "1.00"
    # Cost per customer 0.60 / 0.3 = 2.00 per month.
    assert prices["subscription_per_month"] == "2.00"
    assert prices["hybrid"] == "2.00 for 2 + 1.00 each"


def test_report_target_margin(april_usage):
    document = json.loads(
        report("--period", "2025-04", "--target-margin", "0.5", "--json")
    )
    assert document["workflow_prices"][0]["price_per_execution"] == "0.60"


def test_report_empty_state():
    output = report()
    assert "No customers with a subscription or usage" in output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--period", "2025-13"], "Invalid --period '2025-13': expected YYYY-MM"),
        (["--period", "april"], "Invalid --period 'april'"),
        (["--period", "2025-04-01"], "Invalid --period '2025-04-01'"),
        (["--target-margin", "1"], "Invalid --target-margin '1'"),
        (["--target-margin", "abc"], "Invalid --target-margin 'abc'"),
        (["--target-margin", "-0.1"], "Invalid --target-margin '-0.1'"),
    ],
)
def test_report_rejects_bad_input(args, message):
    with pytest.raises(CommandError, match=re.escape(message)):
        report(*args)


def test_report_rejects_future_period():
    next_year = timezone.now().year + 1
    with pytest.raises(CommandError, match="starts after today"):
        report("--period", f"{next_year}-01")
