"""API keys of the calling customer: list them, revoke one."""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.generics import ListAPIView
from rest_framework.response import Response
from rest_framework.views import APIView

from api.pagination import NewestFirstPagination
from api.views import CustomerApiView
from customers.api.authentication import request_customer
from customers.api_keys import api_key_revoke
from customers.models import ApiKey


class ApiKeySerializer(serializers.ModelSerializer):
    class Meta:
        model = ApiKey
        fields = ["id", "name", "prefix", "created_at", "last_used_at", "revoked_at"]
        read_only_fields = fields


class ApiKeyListView(CustomerApiView, ListAPIView):
    """List the calling customer's API keys, revoked ones included."""

    serializer_class = ApiKeySerializer
    pagination_class = NewestFirstPagination

    def get_queryset(self):
        return ApiKey.objects.filter(customer=request_customer(self.request))


class ApiKeyRevokeView(CustomerApiView, APIView):
    @extend_schema(request=None, responses={200: ApiKeySerializer})
    def post(self, request, key_id: int):
        """Revoke one of the calling customer's API keys; revoking again changes nothing.

        A key may revoke itself; its next request then fails with 401.
        """
        api_key = get_object_or_404(
            ApiKey, pk=key_id, customer=request_customer(request)
        )
        api_key_revoke(api_key=api_key)
        return Response(ApiKeySerializer(api_key).data)
