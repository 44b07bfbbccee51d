"""Billing endpoints: outcomes, usage, plans and invoices for customers; staff reports."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.generics import GenericAPIView
from rest_framework.response import Response

from agents.api.selectors import customer_execution
from agents.api.serializers import ExecutionSerializer
from api.errors import INVALID_REQUEST, ApiError
from api.pagination import NewestFirstPagination
from api.schema import error_response as error_schema
from api.views import CustomerApiView, StaffApiView
from billing.analysis import suggested_price_row, workflow_cost_stats
from billing.api import serializers as billing_serializers
from billing.api.selectors import (
    customer_statements,
    customer_usage,
    period_starting_in,
    stripe_invoices_by_period,
)
from billing.margins import customer_period, margin_report
from billing.models import Alert, Plan, Subscription
from billing.services import execution_record_outcome
from customers.api.authentication import request_customer


def utc_today():
    return timezone.now().astimezone(UTC).date()


class ExecutionOutcomeView(CustomerApiView, GenericAPIView):
    serializer_class = billing_serializers.OutcomeSerializer

    @extend_schema(
        request=billing_serializers.OutcomeSerializer,
        responses={
            200: ExecutionSerializer,
            409: error_schema("The execution has not finished yet."),
        },
    )
    def post(self, request, execution_id: int):
        """Record the business value of a finished execution's outcome, for success fees.

        Recording again replaces the value.
        """
        execution = customer_execution(request_customer(request), execution_id)
        body = billing_serializers.OutcomeSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            execution = execution_record_outcome(
                execution=execution, value_usd=body.validated_data["value_usd"]
            )
        except DjangoValidationError as error:
            messages = error.message_dict
            if "execution" in messages:
                raise ApiError(
                    409, "execution_not_finished", messages["execution"][0]
                ) from None
            raise
        return Response(ExecutionSerializer(execution).data)


class UsageView(CustomerApiView, GenericAPIView):
    serializer_class = billing_serializers.UsageSerializer

    @extend_schema(parameters=[billing_serializers.PeriodQuerySerializer])
    def get(self, request):
        """Return the executions and charges of one billing period.

        `period=YYYY-MM` picks the billing period that starts in that
        month; without it, the current one. Charges are the invoice
        preview's lines until the period is closed, then the statement's.
        """
        query = billing_serializers.PeriodQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        customer = request_customer(request)
        month = query.validated_data.get("period")
        if month is None:
            period = customer_period(customer, utc_today())
        else:
            period = period_starting_in(customer, month)
        try:
            usage = customer_usage(customer, period=period, now=timezone.now())
        except ValueError as error:
            raise ApiError(400, INVALID_REQUEST, str(error), field="period") from None
        return Response(billing_serializers.UsageSerializer(usage).data)


class PlanListResponseSerializer(serializers.Serializer):
    results = billing_serializers.PlanSerializer(many=True)


class PlanListView(CustomerApiView, GenericAPIView):
    serializer_class = billing_serializers.PlanSerializer

    @extend_schema(responses={200: PlanListResponseSerializer})
    def get(self, request):
        """List the active plans, and the customer's own plan if it is no longer offered."""
        customer = request_customer(request)
        subscription = (
            Subscription.objects.filter(customer=customer)
            .exclude(status=Subscription.Status.CANCELED)
            .first()
        )
        current_plan_id = subscription.plan_id if subscription else None
        plans = Plan.objects.filter(is_active=True)
        if current_plan_id is not None:
            plans = Plan.objects.filter(is_active=True) | Plan.objects.filter(
                pk=current_plan_id
            )
        context = {"current_plan_id": current_plan_id}
        data = billing_serializers.PlanSerializer(
            plans.order_by("name", "pk"), many=True, context=context
        ).data
        return Response({"results": data})


class StatementPagination(NewestFirstPagination):
    ordering = ("-period_start", "-id")


class InvoiceListView(CustomerApiView, GenericAPIView):
    serializer_class = billing_serializers.InvoiceSerializer
    pagination_class = StatementPagination

    @extend_schema(responses={200: billing_serializers.InvoiceSerializer(many=True)})
    def get(self, request):
        """List the customer's closed billing periods, newest first.

        Each has its lines and total, and the Stripe invoice of the same
        period when Stripe billed it.
        """
        customer = request_customer(request)
        page = self.paginate_queryset(customer_statements(customer))
        context = {"stripe_invoices": stripe_invoices_by_period(customer, page)}
        data = billing_serializers.InvoiceSerializer(page, many=True, context=context)
        return self.get_paginated_response(data.data)


# Staff -----------------------------------------------------------------------


class StaffMarginsView(StaffApiView, GenericAPIView):
    serializer_class = billing_serializers.MarginReportSerializer

    @extend_schema(parameters=[billing_serializers.PeriodQuerySerializer])
    def get(self, request):
        """Return revenue, cost and margin per customer, workflow and model.

        Each customer's billing period is the one containing the first day
        of `period=YYYY-MM`, or today without it. Customers come lowest
        margin first; workflow and model revenue is allocated by executions.
        """
        query = billing_serializers.PeriodQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        day = query.validated_data.get("period") or utc_today()
        report = margin_report(day=day, now=timezone.now())
        return Response(billing_serializers.MarginReportSerializer(report).data)


class StaffPricingAnalysisView(StaffApiView, GenericAPIView):
    serializer_class = billing_serializers.PricingAnalysisSerializer

    @extend_schema(parameters=[billing_serializers.PricingAnalysisQuerySerializer])
    def get(self, request):
        """Return cost per execution per workflow and model, with suggested prices.

        The window is the last `window` UTC days, today included.
        """
        query = billing_serializers.PricingAnalysisQuerySerializer(
            data=request.query_params
        )
        query.is_valid(raise_exception=True)
        days = query.validated_data["window"]
        margin = query.validated_data["target_margin"]
        end = utc_today()
        start = end - timedelta(days=days - 1)
        stats = workflow_cost_stats(
            start=datetime.combine(start, time.min, tzinfo=UTC),
            end=datetime.combine(end + timedelta(days=1), time.min, tzinfo=UTC),
            workflow=query.validated_data.get("workflow"),
        )
        rows = [suggested_price_row(row, margin, days) for row in stats]
        data = {"start": start, "end": end, "target_margin": margin, "rows": rows}
        return Response(billing_serializers.PricingAnalysisSerializer(data).data)


class StaffAlertListView(StaffApiView, GenericAPIView):
    serializer_class = billing_serializers.AlertSerializer
    pagination_class = NewestFirstPagination

    @extend_schema(
        parameters=[billing_serializers.AlertQuerySerializer],
        responses={200: billing_serializers.AlertSerializer(many=True)},
    )
    def get(self, request):
        """List staff alerts, newest first: only open ones unless `state` is set."""
        query = billing_serializers.AlertQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        alerts = Alert.objects.select_related("customer")
        state = query.validated_data["state"]
        if state == "open":
            alerts = alerts.filter(resolved_at__isnull=True)
        elif state == "resolved":
            alerts = alerts.filter(resolved_at__isnull=False)
        if "kind" in query.validated_data:
            alerts = alerts.filter(kind=query.validated_data["kind"])
        if "customer" in query.validated_data:
            alerts = alerts.filter(customer__slug=query.validated_data["customer"])
        page = self.paginate_queryset(alerts)
        data = billing_serializers.AlertSerializer(page, many=True).data
        return self.get_paginated_response(data)
