"""Hard budgets: admission, reservations, run limits and their release."""

import threading
from datetime import UTC, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone

from agents.admission import execution_admit, run_budget_limit
from agents.jobs import Claim, execution_claim, sweep_executions
from agents.models import Execution
from agents.services import execution_create
from agents.signals import execution_finished
from billing.budgets import (
    budget_status,
    period_spend,
    reservations_release_finished,
    run_limit,
)
from billing.margins import customer_period
from billing.models import BudgetReservation, Plan
from billing.services import subscription_create
from tests.factories import CustomerFactory, ExecutionFactory, WorkflowFactory


def spent_execution(customer, workflow, cost: str) -> Execution:
    """Create a finished execution of this period that cost `cost`."""
    return ExecutionFactory(
        customer=customer,
        workflow=workflow,
        status=Execution.Status.SUCCEEDED,
        cost_usd=Decimal(cost),
    )


def queued(customer, workflow, prompt="Check the invoice.") -> Execution:
    return execution_create(customer=customer, workflow=workflow, prompt=prompt)


def this_period(customer):
    return customer_period(customer, timezone.now().astimezone(UTC).date())


@pytest.mark.django_db(transaction=True)
def test_concurrent_starts_admit_two(settings):
    settings.AGENTMARGIN_CUSTOMER_CONCURRENCY = 10
    customer = CustomerFactory(slug="capped", monthly_budget_usd=Decimal("5.00"))
    workflow = WorkflowFactory(slug="triage", per_run_budget_usd=Decimal("0.0884"))
    spent_execution(customer, workflow, "4.752720")
    executions = [queued(customer, workflow, f"Run {n}.") for n in range(4)]
    barrier = threading.Barrier(len(executions))
    claims = {}

    def start(execution_id):
        try:
            barrier.wait(timeout=10)
            claim, _ = execution_claim(execution_id, worker=f"thread-{execution_id}")
            claims[execution_id] = claim
            if claim is Claim.CLAIMED:
                # The run costs exactly what it reserved.
                Execution.objects.filter(pk=execution_id).update(
                    status=Execution.Status.SUCCEEDED,
                    cost_usd=Decimal("0.0884"),
                    finished_at=timezone.now(),
                )
                execution_finished.send(
                    sender=Execution,
                    execution_id=execution_id,
                    status=Execution.Status.SUCCEEDED,
                )
        finally:
            connection.close()

    threads = [
        threading.Thread(target=start, args=(execution.pk,)) for execution in executions
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    outcomes = sorted(claim.value for claim in claims.values())
    assert outcomes == ["claimed", "claimed", "rejected", "rejected"]
    rejected = Execution.objects.filter(status=Execution.Status.BUDGET_EXCEEDED)
    assert rejected.count() == 2
    for execution in rejected:
        assert execution.started_at is None
        assert execution.api_message_count == 0
        assert "this run could take it over, so it was not started" in execution.error
        assert "$" not in execution.error
    assert BudgetReservation.objects.count() == 2
    assert not BudgetReservation.objects.filter(released_at__isnull=True).exists()
    start, end = this_period(customer)
    assert period_spend(customer_id=customer.pk, start=start, end=end) == Decimal(
        "4.929520"
    )
    assert budget_status(customer).spent_usd == Decimal("4.929520")


@pytest.mark.django_db
def test_customer_without_budget_never_blocked():
    customer = CustomerFactory(slug="open")
    workflow = WorkflowFactory(slug="triage", per_run_budget_usd=Decimal("50"))
    spent_execution(customer, workflow, "100000")
    execution = queued(customer, workflow)

    claim, claimed = execution_claim(execution.pk, worker="w1")

    assert claim is Claim.CLAIMED
    assert claimed.status == Execution.Status.RUNNING
    assert not BudgetReservation.objects.exists()
    assert run_limit(claimed) is None
    assert run_budget_limit(claimed) == Decimal("50")


@pytest.mark.django_db
def test_plan_default_budget_applies():
    plan = Plan.objects.create(
        name="Starter",
        slug="starter",
        billing_model=Plan.BillingModel.SUBSCRIPTION,
        monthly_price=Decimal("100.00"),
        default_monthly_budget_usd=Decimal("1.00"),
    )
    customer = CustomerFactory(slug="planned")
    subscription_create(
        customer=customer, plan=plan, start=timezone.now().date().replace(day=1)
    )
    workflow = WorkflowFactory(slug="triage", per_run_budget_usd=Decimal("0.10"))
    spent_execution(customer, workflow, "0.95")

    claim, execution = execution_claim(queued(customer, workflow).pk, worker="w1")

    assert claim is Claim.REJECTED
    assert execution.status == Execution.Status.BUDGET_EXCEEDED
    assert "is 95% used" in execution.error
    assert "$" not in execution.error
    assert budget_status(customer).limits.hard_source == "plan"


@pytest.mark.django_db
def test_customer_budget_overrides_plan_default():
    plan = Plan.objects.create(
        name="Starter",
        slug="starter",
        billing_model=Plan.BillingModel.SUBSCRIPTION,
        monthly_price=Decimal("100.00"),
        default_monthly_budget_usd=Decimal("1.00"),
    )
    customer = CustomerFactory(slug="raised", monthly_budget_usd=Decimal("10.00"))
    subscription_create(
        customer=customer, plan=plan, start=timezone.now().date().replace(day=1)
    )
    workflow = WorkflowFactory(slug="triage", per_run_budget_usd=Decimal("0.10"))
    spent_execution(customer, workflow, "0.95")

    claim, _ = execution_claim(queued(customer, workflow).pk, worker="w1")

    assert claim is Claim.CLAIMED
    reservation = BudgetReservation.objects.get()
    assert reservation.amount_usd == Decimal("0.10")
    assert reservation.budget_usd == Decimal("10.00")


@pytest.mark.django_db
def test_default_reservation_without_per_run_budget(settings):
    settings.AGENTMARGIN_DEFAULT_RUN_RESERVATION_USD = Decimal("0.25")
    customer = CustomerFactory(slug="capped", monthly_budget_usd=Decimal("1.00"))
    workflow = WorkflowFactory(slug="open-ended")
    spent_execution(customer, workflow, "0.70")

    first_claim, first = execution_claim(queued(customer, workflow).pk, worker="w1")
    second_claim, _ = execution_claim(queued(customer, workflow).pk, worker="w1")

    assert first_claim is Claim.CLAIMED
    assert BudgetReservation.objects.get().amount_usd == Decimal("0.25")
    assert run_budget_limit(first) == Decimal("0.25")
    # 0.70 spent and 0.25 held by the first run leave too little for another.
    assert second_claim is Claim.REJECTED


@pytest.mark.django_db
def test_held_reservation_counts_at_least_its_amount():
    customer = CustomerFactory(slug="capped", monthly_budget_usd=Decimal("5.00"))
    workflow = WorkflowFactory(slug="triage", per_run_budget_usd=Decimal("0.50"))
    _, execution = execution_claim(queued(customer, workflow).pk, worker="w1")
    start, end = this_period(customer)

    assert period_spend(customer_id=customer.pk, start=start, end=end) == Decimal(
        "0.50"
    )
    Execution.objects.filter(pk=execution.pk).update(cost_usd=Decimal("0.20"))
    assert period_spend(customer_id=customer.pk, start=start, end=end) == Decimal(
        "0.50"
    )
    Execution.objects.filter(pk=execution.pk).update(cost_usd=Decimal("0.70"))
    assert period_spend(customer_id=customer.pk, start=start, end=end) == Decimal(
        "0.70"
    )


@pytest.mark.django_db
def test_run_limit_shrinks_with_other_spend():
    customer = CustomerFactory(slug="capped", monthly_budget_usd=Decimal("5.00"))
    workflow = WorkflowFactory(slug="triage", per_run_budget_usd=Decimal("0.50"))
    other = spent_execution(customer, workflow, "4.00")
    _, execution = execution_claim(queued(customer, workflow).pk, worker="w1")

    assert run_budget_limit(execution) == Decimal("0.50")
    Execution.objects.filter(pk=other.pk).update(cost_usd=Decimal("4.70"))
    assert run_budget_limit(execution) == Decimal("0.30")
    Execution.objects.filter(pk=other.pk).update(cost_usd=Decimal("6.00"))
    assert run_budget_limit(execution) == Decimal("0")


@pytest.mark.django_db
def test_admission_twice_reserves_once():
    customer = CustomerFactory(slug="capped", monthly_budget_usd=Decimal("5.00"))
    workflow = WorkflowFactory(slug="triage", per_run_budget_usd=Decimal("0.50"))
    execution = queued(customer, workflow)

    assert execution_admit(execution) is None
    assert execution_admit(execution) is None
    assert BudgetReservation.objects.filter(execution=execution).count() == 1


@pytest.mark.django_db(transaction=True)
def test_sweeper_releases_stalled_reservation(settings):
    customer = CustomerFactory(slug="capped", monthly_budget_usd=Decimal("5.00"))
    workflow = WorkflowFactory(slug="triage", per_run_budget_usd=Decimal("0.50"))
    _, execution = execution_claim(queued(customer, workflow).pk, worker="gone")
    assert BudgetReservation.objects.get().held

    later = timezone.now() + timedelta(
        seconds=settings.AGENTMARGIN_STALE_AFTER_SECONDS + 1
    )
    result = sweep_executions(now=later)

    reservation = BudgetReservation.objects.get()
    assert result.interrupted == [execution.pk]
    assert reservation.released_at is not None
    assert reservation.actual_cost_usd == Decimal(0)
    assert budget_status(customer).spent_usd == Decimal(0)


@pytest.mark.django_db
def test_periodic_release_catches_missed_release():
    customer = CustomerFactory(slug="capped", monthly_budget_usd=Decimal("5.00"))
    workflow = WorkflowFactory(slug="triage", per_run_budget_usd=Decimal("0.50"))
    _, execution = execution_claim(queued(customer, workflow).pk, worker="w1")
    # Finished, but the release on execution_finished never ran.
    Execution.objects.filter(pk=execution.pk).update(
        status=Execution.Status.FAILED, cost_usd=Decimal("0.12")
    )

    assert reservations_release_finished() == 1
    assert reservations_release_finished() == 0
    reservation = BudgetReservation.objects.get()
    assert reservation.actual_cost_usd == Decimal("0.12")
    assert budget_status(customer).spent_usd == Decimal("0.12")
