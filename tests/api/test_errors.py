"""Every error of the API has one shape: {"error": {"code", "message", "field"}}."""

import logging

import pytest
from rest_framework.exceptions import ValidationError
from rest_framework.test import APIClient

from api.errors import exception_handler, first_error
from tests.api.conftest import key_client

pytestmark = pytest.mark.django_db


def error_of(response):
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "field"}
    assert body["error"]["message"]
    return body["error"]


def test_missing_credentials_401(db):
    response = APIClient().get("/api/v1/executions")
    assert response.status_code == 401
    assert error_of(response)["code"] == "not_authenticated"
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_invalid_key_401(db):
    response = key_client("am_AAAAAAAA_not-a-real-key").get("/api/v1/executions")
    assert response.status_code == 401
    assert error_of(response)["code"] == "authentication_failed"


def test_malformed_authorization_401(db):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer two parts")
    response = client.get("/api/v1/executions")
    assert response.status_code == 401
    assert error_of(response)["code"] == "authentication_failed"


def test_staff_session_cannot_use_customer_endpoint(staff_client):
    response = staff_client.get("/api/v1/executions")
    assert response.status_code == 401
    assert error_of(response)["code"] == "not_authenticated"


def test_api_key_on_staff_endpoint_403(client):
    response = client.get("/api/v1/staff/alerts")
    assert response.status_code == 403
    assert error_of(response)["code"] == "permission_denied"


def test_unknown_path_404(client):
    response = client.get("/api/v1/no-such-thing")
    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"


def test_wrong_method_405(client):
    response = client.delete("/api/v1/executions")
    assert response.status_code == 405
    assert error_of(response)["code"] == "method_not_allowed"


def test_invalid_json_400(client):
    response = client.post(
        "/api/v1/executions", data="{not json", content_type="application/json"
    )
    assert response.status_code == 400
    assert error_of(response)["code"] == "malformed_request"


def test_form_body_415(client):
    response = client.post(
        "/api/v1/executions", data={"workflow": "x"}, format="multipart"
    )
    assert response.status_code == 415
    assert error_of(response)["code"] == "unsupported_media_type"


def test_field_error_names_field(client):
    response = client.post("/api/v1/executions", {"prompt": "Hi"}, format="json")
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "invalid_request"
    assert error["field"] == "workflow"


def test_nested_field_path():
    detail = ValidationError({"metadata": {"team": ["Too long."]}}).detail
    assert first_error(detail) == ("metadata.team", "Too long.")


def test_non_field_error_has_no_field():
    detail = ValidationError({"non_field_errors": ["Both set."]}).detail
    assert first_error(detail) == (None, "Both set.")


def test_unexpected_exception_500_logged(caplog):
    caplog.set_level(logging.ERROR)
    response = exception_handler(RuntimeError("boom"), {"view": None})
    assert response.status_code == 500
    assert response.data["error"]["code"] == "server_error"
    assert "boom" not in response.data["error"]["message"]
    assert "boom" in caplog.text


@pytest.mark.parametrize(
    "body",
    [
        "[" * 100000 + "]" * 100000,
        '{"a":' * 100000 + "1" + "}" * 100000,
        '{"workflow": "code-review", "metadata": ' + "[" * 50000 + "]" * 50000 + "}",
    ],
    ids=["arrays", "objects", "inside-field"],
)
def test_deeply_nested_json_400(client, body):
    response = client.post(
        "/api/v1/executions", data=body, content_type="application/json"
    )
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "malformed_request"
    assert "nested too deeply" in error["message"]
    assert error["field"] is None
