"""Input and output serializers of the executions endpoints."""

from __future__ import annotations

from rest_framework import serializers

from agents.models import ApiMessage, Execution
from agents.services import MAX_PROMPT_CHARS

MAX_METADATA_KEYS = 50
MAX_METADATA_KEY_CHARS = 40
MAX_METADATA_VALUE_CHARS = 500
MAX_IDEMPOTENCY_KEY_CHARS = Execution._meta.get_field("idempotency_key").max_length


class ExecutionCreateSerializer(serializers.Serializer):
    workflow = serializers.SlugField(
        max_length=64, help_text="Slug of the workflow to run, e.g. `code-review`."
    )
    prompt = serializers.CharField(
        max_length=MAX_PROMPT_CHARS,
        help_text="The run's input, put into the workflow's prompt.",
    )
    metadata = serializers.DictField(
        child=serializers.CharField(
            max_length=MAX_METADATA_VALUE_CHARS, allow_blank=True
        ),
        required=False,
        default=dict,
        help_text=(
            f"Up to {MAX_METADATA_KEYS} string values under keys of up to "
            f"{MAX_METADATA_KEY_CHARS} characters, stored with the execution."
        ),
    )

    def validate_metadata(self, metadata: dict) -> dict:
        if len(metadata) > MAX_METADATA_KEYS:
            raise serializers.ValidationError(
                f"metadata has {len(metadata)} keys; the maximum is {MAX_METADATA_KEYS}."
            )
        for key in metadata:
            if not key or len(key) > MAX_METADATA_KEY_CHARS:
                raise serializers.ValidationError(
                    f"Invalid metadata key {key[:60]!r}: expected 1 to "
                    f"{MAX_METADATA_KEY_CHARS} characters."
                )
        return metadata


class ExecutionFilterSerializer(serializers.Serializer):
    status = serializers.ChoiceField(
        choices=Execution.Status.choices, required=False, help_text="Only this status."
    )
    workflow = serializers.SlugField(
        max_length=64, required=False, help_text="Only this workflow's slug."
    )
    created_after = serializers.DateTimeField(
        required=False,
        help_text="Only executions created at or after this time (ISO 8601).",
    )
    created_before = serializers.DateTimeField(
        required=False, help_text="Only executions created before this time (ISO 8601)."
    )


class ExecutionSerializer(serializers.ModelSerializer):
    workflow = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    error = serializers.SerializerMethodField(
        help_text="Why the run ended early: our reason, without the CLI's diagnostics."
    )

    class Meta:
        model = Execution
        fields = [
            "id",
            "workflow",
            "status",
            "prompt",
            "metadata",
            "requested_model",
            "simulated",
            "created_at",
            "started_at",
            "finished_at",
            "cancel_requested_at",
            "num_turns",
            "api_message_count",
            "input_tokens",
            "output_tokens",
            "cache_write_5m_tokens",
            "cache_write_1h_tokens",
            "cache_read_tokens",
            "web_search_requests",
            "estimated",
            "error",
            "outcome_value_usd",
        ]
        read_only_fields = fields

    def get_error(self, execution) -> str:
        # The first line is our reason or the API's error; the lines after it
        # are the CLI's own diagnostics, kept for staff.
        return execution.error.split("\n", 1)[0]


class ApiMessageSerializer(serializers.ModelSerializer):
    class Meta:
        model = ApiMessage
        fields = [
            "message_id",
            "sequence",
            "model",
            "parent_tool_use_id",
            "input_tokens",
            "output_tokens",
            "cache_write_5m_tokens",
            "cache_write_1h_tokens",
            "cache_read_tokens",
            "web_search_requests",
            "output_final",
            "estimated",
            "arrived_at",
        ]
        read_only_fields = fields


class ExecutionDetailSerializer(ExecutionSerializer):
    api_messages = ApiMessageSerializer(many=True, read_only=True)

    class Meta(ExecutionSerializer.Meta):
        fields = [*ExecutionSerializer.Meta.fields, "api_messages"]
        read_only_fields = fields
