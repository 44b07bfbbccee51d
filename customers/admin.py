from django.contrib import admin

from customers.models import Customer


@admin.register(Customer)
class CustomerAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "status", "monthly_budget_usd", "created_at"]
    list_filter = ["status"]
    search_fields = ["name", "slug", "stripe_customer_id"]
    prepopulated_fields = {"slug": ["name"]}
    readonly_fields = ["created_at"]
