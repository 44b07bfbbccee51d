"""Template tags of the billing admin."""

from django import template
from django.db.models import Count, Q

from billing.models import Alert

register = template.Library()


@register.simple_tag(takes_context=True)
def open_alert_counts(context) -> list[dict]:
    """Return the unresolved alerts per severity, most severe first.

    Each entry has `severity` (the value), `label`, `open` and
    `unacknowledged`. Empty for a user who may not view alerts.
    """
    request = context.get("request")
    if request is None or not request.user.has_perm("billing.view_alert"):
        return []
    rows = (
        Alert.objects.filter(resolved_at__isnull=True)
        .values("severity")
        .annotate(
            open=Count("pk"),
            unacknowledged=Count("pk", filter=Q(acknowledged_at__isnull=True)),
        )
    )
    counts = {row["severity"]: row for row in rows}
    return [
        {
            "severity": severity,
            "label": label,
            "open": counts[severity]["open"],
            "unacknowledged": counts[severity]["unacknowledged"],
        }
        for severity, label in reversed(Alert.Severity.choices)
        if severity in counts
    ]
