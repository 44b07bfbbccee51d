"""The OpenAPI schema, the docs page, and a schemathesis run against the schema.

Schemathesis generates requests from the live schema and sends them to the
WSGI application in this process, with a customer's API key. Every
response must be free of server errors and match the schema.
"""

from decimal import Decimal

import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.utils import timezone
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient
from schemathesis.checks import not_a_server_error, response_schema_conformance

from agents.models import Execution
from billing.models import Alert
from customers.api_keys import api_key_create
from tests.factories import CustomerFactory, ExecutionFactory, WorkflowFactory

pytestmark = pytest.mark.django_db


def test_schema_is_openapi_3(db):
    response = APIClient().get("/api/schema/?format=json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    paths = schema["paths"]
    for path in [
        "/api/v1/executions",
        "/api/v1/executions/{execution_id}",
        "/api/v1/executions/{execution_id}/events",
        "/api/v1/executions/{execution_id}/cancel",
        "/api/v1/executions/{execution_id}/outcome",
        "/api/v1/usage",
        "/api/v1/plans",
        "/api/v1/invoices",
        "/api/v1/staff/margins",
        "/api/v1/staff/pricing-analysis",
        "/api/v1/staff/alerts",
    ]:
        assert path in paths
    create = paths["/api/v1/executions"]["post"]["responses"]
    assert create["402"]["content"]["application/json"]["schema"]["properties"]["error"]


def test_docs_page(db):
    response = APIClient().get("/api/docs/")
    assert response.status_code == 200
    content = response.content.decode()
    assert "swagger-ui" in content
    # The page's scripts are served from this site, never from a CDN.
    assert "cdn.jsdelivr.net" not in content
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/" in content


# Loaded when the module is imported, through the application in this
# process. schemathesis.pytest.from_fixture would load it per test, but it
# fails under pytest 9 (it sets the removed `Function._nodeid`).
APP = WSGIHandler()
schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", APP)


@pytest.fixture
def open_connection():
    """Keep the test's database connection open across requests to APP.

    At the end of each request Django closes the connection, which would
    drop the transaction the test runs in. Django's test client keeps it
    open the same way.
    """
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def tenant(db, settings, open_connection, sent_tasks):
    """A customer's API key, a workflow, and executions in each state."""
    # Streams of unfinished executions end at once, so a generated request
    # for the events endpoint never waits.
    settings.AGENTMARGIN_LIVE_STREAM_MAX_SECONDS = 0
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {
            "api_key": "100000/minute",
            "staff": "100000/minute",
        },
    }
    customer = CustomerFactory(slug="schemathesis")
    workflow = WorkflowFactory(slug="code-review")
    for status in Execution.Status.values:
        ExecutionFactory(customer=customer, workflow=workflow, status=status)
    ExecutionFactory(workflow=workflow)  # another customer's
    return api_key_create(customer=customer, name="schemathesis")[1]


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_schema(case, tenant):
    case.call_and_validate(
        headers={"Authorization": f"Bearer {tenant}"},
        checks=[not_a_server_error, response_schema_conformance],
    )


def test_event_stream_conforms_to_schema(tenant):
    """Each event of a finished execution's stream matches the documented event."""
    execution = Execution.objects.filter(
        customer__slug="schemathesis", status=Execution.Status.SUCCEEDED
    ).get()
    operation = schema["/api/v1/executions/{execution_id}/events"]["GET"]
    case = operation.Case(path_parameters={"execution_id": execution.pk})
    response = case.call_and_validate(
        headers={"Authorization": f"Bearer {tenant}"},
        checks=[not_a_server_error, response_schema_conformance],
    )
    assert response.status_code == 200
    assert "event: execution_finished" in response.text


@pytest.fixture
def staff_token(tenant, django_user_model):
    """A staff user's DRF token, with an alert and finished executions to report."""
    staff = django_user_model.objects.create_user(username="staff", is_staff=True)
    Alert.objects.create(kind=Alert.Kind.MARGIN, dedupe_key="m", message="Margin low")
    Execution.objects.update(finished_at=timezone.now(), cost_usd=Decimal("0.25"))
    return Token.objects.create(user=staff).key


@schema.include(path_regex="^/api/v1/staff/").parametrize()
@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
def test_staff_api_conforms_to_schema(case, staff_token):
    case.call_and_validate(
        headers={"Authorization": f"Token {staff_token}"},
        checks=[not_a_server_error, response_schema_conformance],
    )
