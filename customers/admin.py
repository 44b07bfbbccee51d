from django import forms
from django.contrib import admin, messages

from customers.api_keys import api_key_create, api_key_revoke
from customers.models import ApiKey, Customer, Invitation, Membership


@admin.register(Customer)
class CustomerAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "slug",
        "status",
        "monthly_budget_usd",
        "monthly_soft_budget_usd",
        "created_at",
    ]
    list_filter = ["status"]
    search_fields = ["name", "slug", "stripe_customer_id"]
    prepopulated_fields = {"slug": ["name"]}
    readonly_fields = ["created_at"]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "customer", "role", "email_verified_at", "created_at"]
    list_filter = ["role"]
    search_fields = ["user__email", "customer__name", "customer__slug"]
    list_select_related = ["user", "customer"]
    raw_id_fields = ["user"]
    readonly_fields = ["created_at"]


@admin.register(Invitation)
class InvitationAdmin(admin.ModelAdmin):
    """Invitations are created and withdrawn in the portal; staff only read them."""

    list_display = ["email", "customer", "created_at", "expires_at", "accepted_at"]
    search_fields = ["email", "customer__name"]
    list_select_related = ["customer"]
    exclude = ["token_hash"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class ApiKeyAddForm(forms.ModelForm):
    class Meta:
        model = ApiKey
        fields = ["customer", "name"]

    def clean_customer(self):
        customer = self.cleaned_data["customer"]
        if customer.status != Customer.Status.ACTIVE:
            raise forms.ValidationError(
                f"Customer {customer.slug} is {customer.status}; only active "
                "customers get API keys."
            )
        return customer


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """API keys: created through `api_key_create`, which shows the key once."""

    add_form = ApiKeyAddForm
    list_display = [
        "prefix",
        "name",
        "customer",
        "created_at",
        "last_used_at",
        "revoked_at",
    ]
    list_filter = ["revoked_at"]
    search_fields = ["prefix", "name", "customer__slug"]
    list_select_related = ["customer"]
    actions = ["revoke"]

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["customer", "name"]
        return [
            "customer",
            "name",
            "prefix",
            "created_at",
            "created_by",
            "last_used_at",
            "revoked_at",
        ]

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = self.add_form
        return super().get_form(request, obj, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.get_fields(request, obj)

    def save_model(self, request, obj, form, change):
        if change:
            return
        api_key, key = api_key_create(
            customer=obj.customer, name=obj.name, created_by=request.user
        )
        obj.pk = api_key.pk
        messages.warning(
            request,
            f"API key for {api_key.customer.slug}: {key} — copy it now, it is "
            "not shown again.",
        )

    @admin.action(description="Revoke the selected API keys")
    def revoke(self, request, queryset):
        for api_key in queryset.select_related("customer"):
            api_key_revoke(api_key=api_key)
        self.message_user(request, f"{queryset.count()} API keys revoked.")
