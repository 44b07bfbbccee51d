from django.db import models


class Alert(models.Model):
    """Something staff must look at: a stalled run, a cost above a limit.

    `dedupe_key` makes raising the same alert twice a no-op: one alert per
    rule, subject and period.
    """

    class Kind(models.TextChoices):
        STALLED_EXECUTION = "stalled_execution", "Stalled execution"

    class Severity(models.TextChoices):
        INFO = "info", "Info"
        WARNING = "warning", "Warning"
        CRITICAL = "critical", "Critical"

    kind = models.CharField(max_length=40, choices=Kind.choices)
    severity = models.CharField(max_length=16, choices=Severity.choices, default=Severity.WARNING)
    customer = models.ForeignKey(
        "customers.Customer", on_delete=models.CASCADE, null=True, blank=True, related_name="alerts"
    )
    execution = models.ForeignKey(
        "agents.Execution", on_delete=models.SET_NULL, null=True, blank=True, related_name="alerts"
    )
    message = models.TextField()
    dedupe_key = models.CharField(max_length=200, unique=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.get_kind_display()}: {self.message[:60]}"
