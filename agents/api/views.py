"""Executions endpoints: start, list, read, follow and cancel runs."""

from __future__ import annotations

import json
import logging

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import StreamingHttpResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
)
from rest_framework import status
from rest_framework.generics import GenericAPIView
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response

from agents.api.selectors import customer_execution, customer_executions
from agents.api.serializers import (
    MAX_IDEMPOTENCY_KEY_CHARS,
    ExecutionCreateSerializer,
    ExecutionDetailSerializer,
    ExecutionFilterSerializer,
    ExecutionSerializer,
)
from agents.api.submission import IdempotencyKeyReused, execution_submit
from agents.customer_events import customer_event
from agents.models import Workflow
from agents.services import ExecutionFinished, execution_cancel
from agents.views import (
    DEFAULT_KEEPALIVE_SECONDS,
    DEFAULT_STREAM_MAX_SECONDS,
    ExecutionEventStream,
)
from api.errors import INVALID_REQUEST, ApiError, error_response
from api.pagination import NewestFirstPagination
from api.schema import error_response as error_schema
from api.views import CustomerApiView
from customers.api.authentication import request_customer

logger = logging.getLogger(__name__)

IDEMPOTENCY_HEADER = "Idempotency-Key"

# Stable code, status and field of each error code of
# agents.services.execution_create.
CREATE_ERRORS = {
    "customer_inactive": (403, "customer_inactive", None),
    "workflow_inactive": (400, INVALID_REQUEST, "workflow"),
    "prompt_empty": (400, INVALID_REQUEST, "prompt"),
    "prompt_too_long": (400, INVALID_REQUEST, "prompt"),
}


def execution_url(execution_id: int) -> str:
    return reverse("api-execution-detail", args=[execution_id])


class ExecutionListView(CustomerApiView, GenericAPIView):
    serializer_class = ExecutionSerializer
    pagination_class = NewestFirstPagination

    @extend_schema(
        operation_id="executions_list",
        parameters=[ExecutionFilterSerializer],
        responses={200: ExecutionSerializer(many=True)},
    )
    def get(self, request):
        """List the customer's executions, newest first, a page at a time."""
        filters = ExecutionFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        executions = customer_executions(
            request_customer(request), **filters.validated_data
        )
        page = self.paginate_queryset(executions)
        return self.get_paginated_response(ExecutionSerializer(page, many=True).data)

    @extend_schema(
        request=ExecutionCreateSerializer,
        parameters=[
            OpenApiParameter(
                IDEMPOTENCY_HEADER,
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                description=(
                    "Optional key of up to 255 printable ASCII characters. A "
                    "request repeated with the same key returns the execution "
                    "the first one created instead of starting another run."
                ),
            )
        ],
        responses={
            202: ExecutionSerializer,
            402: error_schema("The customer's budget does not cover the run."),
            409: error_schema("The idempotency key was used for another request."),
        },
    )
    def post(self, request):
        """Start a run of a workflow; it is queued and runs in a worker.

        Returns 202 with the queued execution, or 402 `budget_exceeded`
        when the customer's budget cannot cover it: the execution is then
        closed without running, and the Location header points at it.
        """
        idempotency_key = self._idempotency_key(request)
        body = ExecutionCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        workflow = Workflow.objects.filter(slug=data["workflow"]).first()
        if workflow is None:
            raise ApiError(
                400,
                INVALID_REQUEST,
                f"Workflow {data['workflow']!r} not found. Check the slug.",
                field="workflow",
            )
        try:
            submission = execution_submit(
                customer=request_customer(request),
                workflow=workflow,
                prompt=data["prompt"],
                metadata=data["metadata"],
                idempotency_key=idempotency_key,
                api_key=request.auth,
            )
        except IdempotencyKeyReused as error:
            raise ApiError(
                409, "idempotency_key_reused", str(error), field=IDEMPOTENCY_HEADER
            ) from None
        except DjangoValidationError as error:
            status_code, code, field = CREATE_ERRORS.get(
                error.code, (400, INVALID_REQUEST, None)
            )
            raise ApiError(
                status_code, code, " ".join(error.messages), field=field
            ) from None
        execution = submission.execution
        headers = {"Location": execution_url(execution.pk)}
        if submission.replayed:
            headers["Idempotent-Replayed"] = "true"
        if submission.rejection is not None:
            return error_response(
                status.HTTP_402_PAYMENT_REQUIRED,
                "budget_exceeded",
                submission.rejection.reason,
                headers=headers,
            )
        return Response(
            ExecutionSerializer(execution).data,
            status=status.HTTP_202_ACCEPTED,
            headers=headers,
        )

    def _idempotency_key(self, request) -> str:
        key = request.headers.get(IDEMPOTENCY_HEADER, "")
        if key and (
            len(key) > MAX_IDEMPOTENCY_KEY_CHARS
            or not key.isascii()
            or not key.isprintable()
        ):
            raise ApiError(
                400,
                INVALID_REQUEST,
                f"Invalid {IDEMPOTENCY_HEADER}: expected up to "
                f"{MAX_IDEMPOTENCY_KEY_CHARS} printable ASCII characters.",
                field=IDEMPOTENCY_HEADER,
            )
        return key


class ExecutionDetailView(CustomerApiView, GenericAPIView):
    serializer_class = ExecutionDetailSerializer

    def get(self, request, execution_id: int):
        """Return one execution with its API messages, in order of arrival."""
        execution = customer_execution(
            request_customer(request), execution_id, with_messages=True
        )
        return Response(ExecutionDetailSerializer(execution).data)


class ExecutionCancelView(CustomerApiView, GenericAPIView):
    serializer_class = ExecutionSerializer

    @extend_schema(
        request=None,
        responses={
            200: OpenApiResponse(
                ExecutionSerializer, description="Queued: ended without running."
            ),
            202: OpenApiResponse(
                ExecutionSerializer,
                description="Running: the runner stops it within seconds.",
            ),
            409: error_schema("The execution has already finished."),
        },
    )
    def post(self, request, execution_id: int):
        """Cancel an execution.

        A queued one ends `interrupted` at once (200). A running one is
        stopped by its runner within a second or two and ends
        `interrupted` with everything recorded until then (202). Asking
        again is harmless; a finished one returns 409 `execution_finished`.
        """
        execution = customer_execution(request_customer(request), execution_id)
        try:
            execution = execution_cancel(execution=execution)
        except ExecutionFinished as error:
            raise ApiError(409, "execution_finished", str(error)) from None
        code = status.HTTP_200_OK if execution.is_finished else status.HTTP_202_ACCEPTED
        return Response(ExecutionSerializer(execution).data, status=code)


class EventStreamRenderer(BaseRenderer):
    """text/event-stream; renders only error bodies, as one `error` event."""

    media_type = "text/event-stream"
    format = "event-stream"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return f"event: error\ndata: {json.dumps(data)}\n\n".encode()


# One server-sent event. Before OpenAPI 3.2, the schema of an event-stream
# response describes each event of the stream, as a client parses it.
EVENT_SCHEMA = {
    "type": "object",
    "properties": {
        "event": {
            "type": "string",
            "enum": ["api_message", "execution_finished", "error"],
        },
        "data": {
            "type": "string",
            "description": "The event as a JSON object, with its `type`.",
        },
    },
    "required": ["event", "data"],
}


class ExecutionEventsView(CustomerApiView, GenericAPIView):
    renderer_classes = [JSONRenderer, EventStreamRenderer]

    @extend_schema(
        responses={
            (200, "text/event-stream"): OpenApiResponse(
                EVENT_SCHEMA,
                description=(
                    "Server-sent events: `api_message` for each stored and then "
                    "each live message update, `execution_finished` with the "
                    "summary, after which the stream ends."
                ),
            )
        }
    )
    def get(self, request, execution_id: int):
        """Stream the execution's API messages as server-sent events."""
        execution = customer_execution(request_customer(request), execution_id)
        stream = ExecutionEventStream(
            execution.pk,
            event_filter=customer_event,
            keepalive_seconds=getattr(
                settings,
                "AGENTMARGIN_LIVE_KEEPALIVE_SECONDS",
                DEFAULT_KEEPALIVE_SECONDS,
            ),
            max_seconds=getattr(
                settings,
                "AGENTMARGIN_LIVE_STREAM_MAX_SECONDS",
                DEFAULT_STREAM_MAX_SECONDS,
            ),
        )
        response = StreamingHttpResponse(
            stream.events(), content_type="text/event-stream"
        )
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
        return response
