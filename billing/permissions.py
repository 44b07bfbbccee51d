"""The read-only "Analyst" staff group.

Analysts see customers, margins, usage, plans, prices and executions in
the admin, and the pricing analysis and margin overview pages, but hold
no add, change or delete permission, so they cannot change a plan or a
price. The group is created, and its permissions reset to this list,
after every `migrate`. Staff put a user in it from the user's admin page,
with "Staff status" ticked.
"""

from django.apps import apps
from django.contrib.auth.management import create_permissions
from django.contrib.auth.models import Group, Permission
from django.db.models import Q

ANALYST_GROUP = "Analyst"

# (app label, model name) pairs an analyst may view.
ANALYST_VIEWS = (
    ("agents", "apimessage"),
    ("agents", "execution"),
    ("agents", "modelprice"),
    ("agents", "workflow"),
    ("billing", "alert"),
    ("billing", "customermargin"),
    ("billing", "dailyusage"),
    ("billing", "monthlyusage"),
    ("billing", "periodrevenue"),
    ("billing", "periodstatement"),
    ("billing", "plan"),
    ("billing", "subscription"),
    ("billing", "subscriptionchange"),
    ("customers", "customer"),
)


def ensure_analyst_group(using: str = "default", **kwargs) -> Group:
    """Create the Analyst group if missing and give it exactly the view permissions."""
    # Permissions of the other apps may not exist yet when billing's
    # post_migrate runs first, so create them here.
    for label in {label for label, _ in ANALYST_VIEWS}:
        create_permissions(apps.get_app_config(label), verbosity=0, using=using)
    wanted = Q()
    for label, model in ANALYST_VIEWS:
        wanted |= Q(content_type__app_label=label, codename=f"view_{model}")
    group, _ = Group.objects.using(using).get_or_create(name=ANALYST_GROUP)
    group.permissions.set(Permission.objects.using(using).filter(wanted))
    return group
