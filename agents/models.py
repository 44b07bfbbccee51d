from decimal import Decimal

from django.core.validators import MinValueValidator
from django.db import models

# Token costs keep 14 decimal places: one cached token can cost
# $0.00000001, and batch or regional multipliers add more digits.
COST_DIGITS = {"max_digits": 24, "decimal_places": 14}
RATE_DIGITS = {"max_digits": 14, "decimal_places": 6}

# Usage counts that Execution and ApiMessage both carry, by field name.
TOKEN_COUNT_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "cache_read_tokens",
    "web_search_requests",
)


def cost_difference(
    cost_usd: Decimal, reported_cost_usd: Decimal | None, *, unpriced: bool
) -> Decimal | None:
    """Return our cost minus the SDK-reported cost, None when either is unknown.

    While any token of the execution is unpriced, `cost_usd` is only the
    priced part, and its difference from the SDK's figure would read as a
    pricing gap that is not there.
    """
    if reported_cost_usd is None or unpriced:
        return None
    return cost_usd - reported_cost_usd


class Workflow(models.Model):
    """A named agent job: its prompt, model, tool permissions and limits."""

    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    prompt_template = models.TextField(
        default="{prompt}",
        help_text="Prompt sent to the agent; {prompt} is replaced by the run's input.",
    )
    model = models.CharField(
        max_length=100, help_text="Model id requested, e.g. claude-sonnet-4-6."
    )
    fallback_model = models.CharField(max_length=100, blank=True)
    max_turns = models.PositiveIntegerField(
        default=10, validators=[MinValueValidator(1)]
    )
    allowed_tools = models.JSONField(
        default=list,
        blank=True,
        help_text='Tool names the agent may use, e.g. ["Read", "Grep"].',
    )
    system_prompt = models.TextField(blank=True)
    per_run_budget_usd = models.DecimalField(
        "per-run budget (USD)",
        max_digits=14,
        decimal_places=4,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal("0.0001"))],
        help_text="Passed to the SDK as max_budget_usd. Empty means no per-run limit.",
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(per_run_budget_usd__gt=0)
                | models.Q(per_run_budget_usd__isnull=True),
                name="workflow_run_budget_positive",
            ),
        ]

    def __str__(self):
        return self.name

    def render_prompt(self, prompt: str) -> str:
        return self.prompt_template.replace("{prompt}", prompt)


class Execution(models.Model):
    """One agent run for a customer, with its token and cost totals."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        INTERRUPTED = "interrupted", "Interrupted"
        MAX_TURNS = "max_turns", "Stopped at max turns"
        BUDGET_EXCEEDED = "budget_exceeded", "Budget exceeded"

    FINISHED_STATUSES = frozenset(
        {
            Status.SUCCEEDED,
            Status.FAILED,
            Status.INTERRUPTED,
            Status.MAX_TURNS,
            Status.BUDGET_EXCEEDED,
        }
    )

    class Source(models.TextChoices):
        LIVE = "live", "Run by AgentMargin"
        IMPORTED = "imported", "Imported transcript"

    customer = models.ForeignKey(
        "customers.Customer", on_delete=models.PROTECT, related_name="executions"
    )
    workflow = models.ForeignKey(
        Workflow, on_delete=models.PROTECT, related_name="executions"
    )
    prompt = models.TextField()
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True
    )
    source = models.CharField(
        max_length=16, choices=Source.choices, default=Source.LIVE
    )
    simulated = models.BooleanField(
        default=False,
        help_text="Run against the local Anthropic API simulator: no real spend.",
    )
    requested_model = models.CharField(max_length=100)
    max_turns = models.PositiveIntegerField(null=True, blank=True)

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    heartbeat_at = models.DateTimeField(
        null=True, blank=True, help_text="Last sign of life from the worker running it."
    )
    worker = models.CharField(
        max_length=200, blank=True, help_text="Worker that ran it."
    )

    sdk_session_id = models.CharField(
        "SDK session id", max_length=64, blank=True, db_index=True
    )
    num_turns = models.PositiveIntegerField(default=0)
    result_subtype = models.CharField(max_length=40, blank=True)
    stop_reason = models.CharField(max_length=40, blank=True)

    api_message_count = models.PositiveIntegerField("API messages", default=0)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cache_write_5m_tokens = models.BigIntegerField(default=0)
    cache_write_1h_tokens = models.BigIntegerField(default=0)
    cache_read_tokens = models.BigIntegerField(default=0)
    web_search_requests = models.PositiveIntegerField(default=0)

    cost_usd = models.DecimalField(
        "cost (USD)",
        default=Decimal(0),
        help_text="Our cost from our price table. When unpriced, the priced part only.",
        **COST_DIGITS,
    )
    reported_cost_usd = models.DecimalField(
        "SDK-reported cost (USD)",
        null=True,
        blank=True,
        help_text="total_cost_usd reported by the SDK (an estimate).",
        **COST_DIGITS,
    )
    cost_difference_usd = models.DecimalField(
        "difference from SDK (USD)",
        null=True,
        blank=True,
        help_text="Our cost minus the SDK-reported cost; empty while any token is unpriced.",
        **COST_DIGITS,
    )
    reported_model_usage = models.JSONField(default=dict, blank=True)
    unpriced = models.BooleanField(
        default=False,
        db_index=True,
        help_text="Some tokens used a model with no known price.",
    )
    estimated = models.BooleanField(
        default=False,
        help_text="Some token counts or rates were estimated, not reported.",
    )
    error = models.TextField(blank=True)
    outcome_value_usd = models.DecimalField(
        "outcome value (USD)",
        max_digits=14,
        decimal_places=2,
        null=True,
        blank=True,
        help_text="Business value of the outcome, for success-fee plans.",
    )
    metadata = models.JSONField(
        default=dict,
        blank=True,
        help_text="Key-value strings the customer attached through the API.",
    )
    idempotency_key = models.CharField(
        max_length=255,
        blank=True,
        help_text="Idempotency-Key header of the API request that created it.",
    )
    api_key = models.ForeignKey(
        "customers.ApiKey",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="executions",
        help_text="API key of the request that created it.",
    )
    cancel_requested_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the customer asked to cancel it; the runner then stops it.",
    )

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["customer", "created_at"]),
            models.Index(fields=["customer", "status"]),
        ]
        constraints = [
            # A session imported twice at the same moment must not be billed
            # twice.
            models.UniqueConstraint(
                fields=["sdk_session_id"],
                condition=models.Q(source="imported") & ~models.Q(sdk_session_id=""),
                name="unique_imported_session",
            ),
            # A retried API request with the same key returns the first
            # execution rather than starting a second run.
            models.UniqueConstraint(
                fields=["customer", "idempotency_key"],
                condition=~models.Q(idempotency_key=""),
                name="unique_idempotency_key_per_customer",
            ),
        ]

    def __str__(self):
        return f"Execution {self.pk} ({self.workflow.slug}, {self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED_STATUSES


class ApiMessage(models.Model):
    """One Anthropic API response (one message id) inside an execution, priced."""

    # No index of its own: the unique constraint on (execution, message_id)
    # serves lookups by execution, and every insert maintains one index less.
    execution = models.ForeignKey(
        Execution,
        on_delete=models.CASCADE,
        related_name="api_messages",
        db_index=False,
    )
    message_id = models.CharField(max_length=100)
    sequence = models.PositiveIntegerField(
        help_text="Order of arrival within the execution."
    )
    model = models.CharField(
        max_length=100, help_text="Model that answered, as the API reported it."
    )
    parent_tool_use_id = models.CharField(
        max_length=100, blank=True, help_text="Set for messages of a subagent."
    )
    service_tier = models.CharField(max_length=20, blank=True)
    inference_geo = models.CharField(max_length=20, blank=True)
    speed = models.CharField(
        max_length=20, blank=True, help_text='"fast" for a request made in fast mode.'
    )

    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cache_write_5m_tokens = models.BigIntegerField(default=0)
    cache_write_1h_tokens = models.BigIntegerField(default=0)
    cache_read_tokens = models.BigIntegerField(default=0)
    web_search_requests = models.PositiveIntegerField(default=0)

    cost_usd = models.DecimalField(
        "cost (USD)",
        null=True,
        blank=True,
        help_text="Empty when the model has no known price.",
        **COST_DIGITS,
    )
    price_source = models.CharField(max_length=40, blank=True)
    price_version = models.CharField(max_length=100, blank=True)
    output_final = models.BooleanField(
        default=False,
        help_text="The output count came from the message's last stream delta.",
    )
    estimated = models.BooleanField(default=False)
    arrived_at = models.DateTimeField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["execution", "sequence"]
        constraints = [
            models.UniqueConstraint(
                fields=["execution", "message_id"],
                name="unique_api_message_per_execution",
            ),
        ]
        indexes = [
            models.Index(fields=["model", "arrived_at"]),
            # The log import looks responses up by message id across executions.
            models.Index(fields=["message_id"], name="api_message_message_id"),
        ]

    def __str__(self):
        return self.message_id

    @property
    def unpriced(self) -> bool:
        return self.cost_usd is None


class ModelPrice(models.Model):
    """A staff-maintained price for a model, overriding the bundled price table.

    `model` is an exact model id (`claude-haiku-4-5-20251001`) or a family id
    (`claude-haiku-4-5`); an exact id wins over its family. A row applies from
    `valid_from` until the next row for the same model.
    """

    model = models.CharField(max_length=100, db_index=True)
    valid_from = models.DateTimeField()
    input_per_mtok = models.DecimalField(**RATE_DIGITS)
    output_per_mtok = models.DecimalField(**RATE_DIGITS)
    cache_write_5m_per_mtok = models.DecimalField(**RATE_DIGITS)
    cache_write_1h_per_mtok = models.DecimalField(**RATE_DIGITS)
    cache_read_per_mtok = models.DecimalField(**RATE_DIGITS)
    web_search_per_thousand = models.DecimalField(default=Decimal(10), **RATE_DIGITS)
    long_context_threshold_tokens = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Prompt length above which the long-context rates apply to the whole request.",
    )
    long_context_input_per_mtok = models.DecimalField(
        null=True, blank=True, **RATE_DIGITS
    )
    long_context_output_per_mtok = models.DecimalField(
        null=True, blank=True, **RATE_DIGITS
    )
    long_context_cache_write_5m_per_mtok = models.DecimalField(
        null=True, blank=True, **RATE_DIGITS
    )
    long_context_cache_write_1h_per_mtok = models.DecimalField(
        null=True, blank=True, **RATE_DIGITS
    )
    long_context_cache_read_per_mtok = models.DecimalField(
        null=True, blank=True, **RATE_DIGITS
    )
    note = models.CharField(
        max_length=200, blank=True, help_text="Why this price exists."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["model", "-valid_from"]
        constraints = [
            models.UniqueConstraint(
                fields=["model", "valid_from"], name="unique_model_price_start"
            ),
        ]

    def __str__(self):
        return f"{self.model} from {self.valid_from:%Y-%m-%d}"
