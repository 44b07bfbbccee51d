import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from agents.models import ApiMessage, Execution
from billing import analysis
from tests.factories import CustomerFactory, ExecutionFactory, WorkflowFactory

SONNET = "claude-sonnet-4-6"
HAIKU = "claude-haiku-4-5"
UNKNOWN = "claude-test-9"
START = datetime(2026, 11, 1, tzinfo=UTC)
END = datetime(2026, 12, 1, tzinfo=UTC)
INSIDE = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)


def make_execution(
    workflow,
    cost,
    *,
    finished_at=INSIDE,
    status=Execution.Status.SUCCEEDED,
    unpriced=False,
    num_turns=1,
    customer=None,
    requested_model=None,
):
    execution = ExecutionFactory(
        workflow=workflow,
        customer=customer or CustomerFactory(slug="acme"),
        status=status,
        requested_model=requested_model or workflow.model,
        cost_usd=cost,
        unpriced=unpriced,
        num_turns=num_turns,
    )
    Execution.objects.filter(pk=execution.pk).update(finished_at=finished_at)
    return execution


def add_message(execution, cost, *, model=SONNET, subagent=False, **tokens):
    sequence = execution.api_messages.count() + 1
    return ApiMessage.objects.create(
        execution=execution,
        message_id=f"msg_{execution.pk}_{sequence}",
        sequence=sequence,
        model=model,
        parent_tool_use_id="toolu_1" if subagent else "",
        cost_usd=cost,
        arrived_at=INSIDE,
        **tokens,
    )


def cents(n):
    return Decimal(n) / 100


# Prices ----------------------------------------------------------------


def test_subscription_price_worked_example():
    monthly_cost = 20 * Decimal("0.05")
    price = analysis.subscription_price(
        monthly_cost=monthly_cost, target_margin=Decimal("0.7")
    )
    assert monthly_cost == Decimal("1.00")
    assert price.display == Decimal("3.33")
    assert price.exact == Decimal(1) / Decimal("0.3")


def test_per_execution_price_worked_example():
    price = analysis.per_execution_price(
        cost_per_execution=Decimal("0.25"), target_margin=Decimal("0.7")
    )
    assert price.display == Decimal("0.83")
    assert price.exact.quantize(Decimal("0.0001")) == Decimal("0.8333")


def test_success_fee_worked_example():
    check = analysis.success_fee_check(
        commission=Decimal("0.02"),
        outcome_value=Decimal("500"),
        cost_per_execution=Decimal("0.15"),
    )
    assert check.fee == Decimal("10")
    assert check.cost == Decimal("0.15")
    assert check.profit == Decimal("9.85")


def test_hybrid_price_base_and_overage():
    price = analysis.hybrid_price(
        included_executions=20,
        cost_per_execution=Decimal("0.05"),
        target_margin=Decimal("0.7"),
    )
    assert price.base.display == Decimal("3.33")
    assert price.overage.display == Decimal("0.17")
    assert price.base.exact == 20 * price.overage.exact


def test_display_rounds_half_up():
    assert analysis.Price(Decimal("0.125")).display == Decimal("0.13")
    assert analysis.Price(Decimal("0.135")).display == Decimal("0.14")


def test_zero_margin_price_is_cost():
    price = analysis.per_execution_price(
        cost_per_execution=Decimal("0.25"), target_margin=Decimal(0)
    )
    assert price.exact == Decimal("0.25")


@pytest.mark.parametrize("margin", ["1", "1.5", "-0.1"])
def test_invalid_margin_rejected(margin):
    with pytest.raises(ValueError, match="Invalid target margin"):
        analysis.subscription_price(
            monthly_cost=Decimal(1), target_margin=Decimal(margin)
        )


def test_invalid_commission_and_inclusion_rejected():
    with pytest.raises(ValueError, match="Invalid commission"):
        analysis.success_fee_check(
            commission=Decimal("1.5"),
            outcome_value=Decimal(1),
            cost_per_execution=Decimal(0),
        )
    with pytest.raises(ValueError, match="Invalid number of included executions"):
        analysis.hybrid_price(
            included_executions=-1,
            cost_per_execution=Decimal(1),
            target_margin=Decimal("0.5"),
        )


# Percentiles in Python -------------------------------------------------


def test_percentile_interpolates():
    costs = [cents(n) for n in range(20, 0, -1)]
    assert analysis.percentile(costs, Decimal("0.5")) == Decimal("0.105")
    assert analysis.percentile(costs, Decimal("0.95")) == Decimal("0.1905")
    assert analysis.percentile(costs, Decimal(0)) == Decimal("0.01")
    assert analysis.percentile(costs, Decimal(1)) == Decimal("0.20")


def test_percentile_of_one_and_none():
    assert analysis.percentile([Decimal("0.3")], Decimal("0.95")) == Decimal("0.3")
    assert analysis.percentile([], Decimal("0.5")) is None


# Statistics ------------------------------------------------------------


@pytest.mark.django_db
def test_stats_on_known_costs():
    workflow = WorkflowFactory(slug="review", model=SONNET)
    for n in range(1, 21):
        make_execution(workflow, cents(n), num_turns=n % 4 + 1)
    [stats] = analysis.workflow_cost_stats(start=START, end=END)
    assert stats.workflow_slug == "review"
    assert stats.model == SONNET
    assert stats.executions == 20
    assert stats.unpriced_executions == 0
    assert stats.customers == 1
    assert stats.cost_mean == Decimal("0.105")
    assert stats.cost_median == Decimal("0.105")
    assert stats.cost_p95 == Decimal("0.1905")
    assert stats.total_cost == Decimal("2.10")
    assert stats.turns_mean == Decimal("2.5")


@pytest.mark.django_db
def test_stats_exact_on_small_costs():
    workflow = WorkflowFactory(slug="review", model=SONNET)
    make_execution(workflow, Decimal("0.00000000000001"))
    make_execution(workflow, Decimal("0.00000000000002"))
    [stats] = analysis.workflow_cost_stats(start=START, end=END)
    assert stats.cost_median == Decimal("0.000000000000015")
    assert isinstance(stats.cost_p95, Decimal)


@pytest.mark.django_db
def test_stats_exclude_unpriced_costs():
    workflow = WorkflowFactory(slug="review", model=SONNET)
    make_execution(workflow, Decimal("0.10"), num_turns=2)
    make_execution(workflow, Decimal("0.30"), num_turns=4)
    make_execution(workflow, Decimal("9.00"), unpriced=True, num_turns=6)
    [stats] = analysis.workflow_cost_stats(start=START, end=END)
    assert stats.executions == 3
    assert stats.unpriced_executions == 1
    assert stats.priced_executions == 2
    assert stats.cost_mean == Decimal("0.2")
    assert stats.cost_median == Decimal("0.2")
    assert stats.total_cost == Decimal("0.40")
    assert stats.turns_mean == Decimal(4)


@pytest.mark.django_db
def test_stats_all_unpriced_have_no_cost():
    workflow = WorkflowFactory(slug="review", model=SONNET)
    make_execution(workflow, Decimal("0.10"), unpriced=True)
    [stats] = analysis.workflow_cost_stats(start=START, end=END)
    assert stats.cost_mean is None
    assert stats.cost_median is None
    assert stats.cost_p95 is None
    assert stats.total_cost == Decimal(0)


@pytest.mark.django_db
def test_stats_window_is_half_open():
    workflow = WorkflowFactory(slug="review", model=SONNET)
    make_execution(workflow, Decimal("0.01"), finished_at=START)
    make_execution(workflow, Decimal("0.02"), finished_at=END - timedelta(seconds=1))
    make_execution(workflow, Decimal("0.04"), finished_at=END)
    make_execution(workflow, Decimal("0.08"), finished_at=START - timedelta(seconds=1))
    [stats] = analysis.workflow_cost_stats(start=START, end=END)
    assert stats.executions == 2
    assert stats.total_cost == Decimal("0.03")


@pytest.mark.django_db
def test_stats_skip_unfinished_executions():
    workflow = WorkflowFactory(slug="review", model=SONNET)
    make_execution(workflow, Decimal("0.01"), status=Execution.Status.FAILED)
    make_execution(workflow, Decimal("0.02"), status=Execution.Status.RUNNING)
    [stats] = analysis.workflow_cost_stats(start=START, end=END)
    assert stats.executions == 1


@pytest.mark.django_db
def test_stats_grouped_and_filtered():
    review = WorkflowFactory(slug="review", model=SONNET)
    triage = WorkflowFactory(slug="triage", model=HAIKU)
    make_execution(review, Decimal("0.10"))
    make_execution(review, Decimal("0.20"), requested_model=HAIKU)
    make_execution(triage, Decimal("0.01"), customer=CustomerFactory(slug="globex"))
    stats = analysis.workflow_cost_stats(start=START, end=END)
    keys = [(row.workflow_slug, row.model) for row in stats]
    assert keys == [("review", HAIKU), ("review", SONNET), ("triage", HAIKU)]
    only = analysis.workflow_cost_stats(
        start=START, end=END, workflow="review", model=SONNET
    )
    assert [(row.workflow_slug, row.model) for row in only] == [("review", SONNET)]
    assert only[0].total_cost == Decimal("0.10")


def test_stats_reject_empty_window():
    with pytest.raises(ValueError, match="at or before it starts"):
        analysis.workflow_cost_stats(start=END, end=START)


# What-if ---------------------------------------------------------------


@pytest.mark.django_db
def test_reprice_on_haiku():
    workflow = WorkflowFactory(slug="review", model=SONNET)
    execution = make_execution(workflow, Decimal("7.5"))
    add_message(
        execution,
        Decimal("7.5"),
        input_tokens=1_000_000,
        output_tokens=200_000,
        cache_write_5m_tokens=100_000,
        cache_write_1h_tokens=50_000,
        cache_read_tokens=2_000_000,
    )
    add_message(execution, Decimal(0), output_tokens=1_000)
    estimate = analysis.reprice_workflow_on_model(
        workflow="review", model=HAIKU, start=START, end=END
    )
    # 1 + 1 + 0.125 + 0.1 + 0.2 dollars, then 0.005 dollars.
    assert estimate.messages == 2
    assert estimate.actual_cost == Decimal("7.5")
    assert estimate.hypothetical_cost == Decimal("2.43")
    assert estimate.difference == Decimal("-5.07")
    assert estimate.hypothetical_unpriced_messages == 0


@pytest.mark.django_db
def test_reprice_on_unknown_model_is_unpriced():
    workflow = WorkflowFactory(slug="review", model=SONNET)
    execution = make_execution(workflow, Decimal("0.5"))
    add_message(execution, Decimal("0.5"), input_tokens=1_000)
    estimate = analysis.reprice_workflow_on_model(
        workflow="review", model=UNKNOWN, start=START, end=END
    )
    assert estimate.hypothetical_unpriced_messages == 1
    assert estimate.hypothetical_cost == Decimal(0)
    assert estimate.difference is None


@pytest.mark.django_db
def test_reprice_counts_recorded_unpriced():
    workflow = WorkflowFactory(slug="review", model=SONNET)
    execution = make_execution(workflow, Decimal(0), unpriced=True)
    add_message(execution, None, model=UNKNOWN, output_tokens=1_000_000)
    estimate = analysis.reprice_workflow_on_model(
        workflow="review", model=HAIKU, start=START, end=END
    )
    assert estimate.actual_unpriced_messages == 1
    assert estimate.hypothetical_cost == Decimal(5)
    assert estimate.difference is None


@pytest.mark.django_db
def test_max_turns_cap_savings():
    workflow = WorkflowFactory(slug="review", model=SONNET)
    long_run = make_execution(workflow, Decimal("0.16"))
    add_message(long_run, Decimal("0.01"))
    add_message(long_run, Decimal("0.02"), subagent=True)
    add_message(long_run, Decimal("0.03"))
    add_message(long_run, Decimal("0.04"))
    add_message(long_run, None, subagent=True)
    add_message(long_run, Decimal("0.06"))
    short_run = make_execution(workflow, Decimal("0.30"))
    add_message(short_run, Decimal("0.10"))
    add_message(short_run, Decimal("0.20"), subagent=True)
    add_message(short_run, Decimal("0.30"))

    savings = analysis.max_turns_cap_savings(
        workflow="review", cap=2, start=START, end=END
    )
    assert savings.executions == 1
    assert savings.messages == 3
    assert savings.cost == Decimal("0.10")
    assert savings.unpriced_messages == 1

    savings = analysis.max_turns_cap_savings(
        workflow="review", cap=1, start=START, end=END
    )
    assert savings.executions == 2
    assert savings.messages == 7
    assert savings.cost == Decimal("0.65")

    savings = analysis.max_turns_cap_savings(
        workflow="review", cap=4, start=START, end=END
    )
    assert savings.executions == 0
    assert savings.cost == Decimal(0)


def test_cap_below_one_rejected():
    with pytest.raises(ValueError, match="Invalid cap 0"):
        analysis.max_turns_cap_savings(workflow="review", cap=0, start=START, end=END)


# Command ---------------------------------------------------------------


def run_command(*args):
    out = StringIO()
    call_command("pricing_analysis", *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_command_table():
    workflow = WorkflowFactory(slug="review", model=SONNET)
    for _ in range(20):
        make_execution(workflow, Decimal("0.05"))
    output = run_command("--start", "2026-11-01", "--end", "2026-12-01")
    assert "target margin 0.7" in output
    assert "review" in output
    assert "subscription_per_month" in output
    # 20 x $0.05 over 30 days for one customer, at 70%.
    assert "3.33" in output
    assert "0.17" in output
    assert "leave out unpriced executions" in output


@pytest.mark.django_db
def test_command_json():
    workflow = WorkflowFactory(slug="review", model=SONNET)
    make_execution(workflow, Decimal("0.25"))
    make_execution(workflow, Decimal("1"), unpriced=True)
    output = run_command(
        "--start", "2026-11-01", "--end", "2026-12-01", "--workflow", "review", "--json"
    )
    [row] = json.loads(output)["rows"]
    assert row["executions"] == 2
    assert row["unpriced"] == 1
    assert row["cost_mean"] == "0.250000"
    assert row["price_per_execution"] == "0.83"


@pytest.mark.django_db
def test_command_empty_state():
    output = run_command("--start", "2026-11-01", "--end", "2026-12-01")
    assert "No finished executions in this window." in output


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--start", "2026-13-01"], "Invalid --start '2026-13-01'"),
        (["--end", "tomorrow"], "Invalid --end 'tomorrow'"),
        (["--start", "2026-12-01", "--end", "2026-11-01"], "Invalid window"),
        (["--target-margin", "1"], "Invalid --target-margin '1'"),
        (["--target-margin", "much"], "Invalid --target-margin 'much'"),
        (["--workflow", "nope"], "Workflow 'nope' not found"),
    ],
)
def test_command_rejects_bad_input(args, message):
    with pytest.raises(CommandError, match=message):
        run_command(*args)
