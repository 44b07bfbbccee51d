"""Lookups shared by the management commands."""

from django.core.management.base import CommandError


def get_by_slug(model, slug: str):
    """Return the `model` row with `slug`, or raise CommandError listing known slugs."""
    try:
        return model.objects.get(slug=slug)
    except model.DoesNotExist:
        known = ", ".join(
            model.objects.order_by("slug").values_list("slug", flat=True)[:20]
        )
        raise CommandError(
            f"{model._meta.verbose_name.capitalize()} {slug!r} not found. "
            f"Known: {known or 'none'}."
        ) from None
