import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from billing.models import Alert
from billing.rollups import roll_up_usage
from billing.services import alert_acknowledge, alert_resolve
from tests.billing.usage import at, make_execution
from tests.factories import CustomerFactory, WorkflowFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff():
    return get_user_model().objects.create_superuser(
        username="staff", email="staff@example.com", password="password-for-tests"
    )


@pytest.fixture
def alert():
    customer = CustomerFactory(slug="acme")
    execution = make_execution(
        customer, WorkflowFactory(slug="review"), at("2025-11-03T10:00:00")
    )
    return Alert.objects.create(
        kind=Alert.Kind.STALLED_EXECUTION,
        customer=customer,
        execution=execution,
        message=f"Execution {execution.pk} stalled.",
        dedupe_key=f"stalled_execution:{execution.pk}",
    )


def test_acknowledge_records_user_once(alert, staff):
    other = get_user_model().objects.create_user(username="other")
    first = alert_acknowledge(alert=alert, user=staff)
    assert first.acknowledged_at is not None
    assert first.acknowledged_by == staff
    assert first.resolved_at is None

    again = alert_acknowledge(alert=alert, user=other)
    assert again.acknowledged_at == first.acknowledged_at
    assert again.acknowledged_by == staff


def test_resolve_also_acknowledges(alert, staff):
    resolved = alert_resolve(alert=alert, user=staff)
    assert resolved.resolved_at is not None
    assert resolved.resolved_by == staff
    assert resolved.acknowledged_at == resolved.resolved_at
    assert resolved.acknowledged_by == staff


def test_resolve_keeps_earlier_acknowledgement(alert, staff):
    other = get_user_model().objects.create_user(username="other")
    acknowledged = alert_acknowledge(alert=alert, user=other)
    resolved = alert_resolve(alert=alert, user=staff)
    assert resolved.acknowledged_by == other
    assert resolved.acknowledged_at == acknowledged.acknowledged_at
    assert resolved.resolved_by == staff


def test_admin_actions_call_services(alert, staff, client):
    client.force_login(staff)
    url = reverse("admin:billing_alert_changelist")
    response = client.post(
        url, {"action": "acknowledge", "_selected_action": [alert.pk]}, follow=True
    )
    assert response.status_code == 200
    assert "Alerts acknowledged: 1." in response.content.decode()
    alert.refresh_from_db()
    assert alert.acknowledged_by == staff

    response = client.post(
        url, {"action": "resolve", "_selected_action": [alert.pk]}, follow=True
    )
    assert "Alerts resolved: 1." in response.content.decode()
    alert.refresh_from_db()
    assert alert.resolved_by == staff


def test_admin_pages_render(alert, staff, client):
    client.force_login(staff)
    roll_up_usage()
    for name in ("alert", "dailyusage", "monthlyusage"):
        response = client.get(reverse(f"admin:billing_{name}_changelist"))
        assert response.status_code == 200
    response = client.get(reverse("admin:billing_alert_change", args=[alert.pk]))
    assert response.status_code == 200
    response = client.get(reverse("admin:billing_dailyusage_add"))
    assert response.status_code == 403
