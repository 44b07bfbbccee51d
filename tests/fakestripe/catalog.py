"""Customers, products and prices."""

from .listing import paginate, search
from .objects import build, deleted
from .wire import FakeStripeError, unsupported

# Parameters handled apart from the fields that are copied onto the object.
_SPECIAL = frozenset(
    {"metadata", "expand", "id", "default_price_data", "default_price"}
)


def merge_metadata(current, update):
    """Apply Stripe's metadata update rules: keys merge, "" unsets a key or all."""
    if update == "":
        return {}
    merged = dict(current or {})
    for key, value in update.items():
        if value == "":
            merged.pop(key, None)
        else:
            merged[key] = str(value)
    return merged


def _apply(obj, params, where):
    """Copy parameters that are fields of the object; reject the others.

    A parameter with no field of its name (a customer's ``payment_method``,
    say) would need behaviour this fake does not have.
    """
    for name, value in params.items():
        if name in _SPECIAL:
            continue
        if name not in obj:
            raise unsupported(name, where)
        obj[name] = value
    if "metadata" in params:
        obj["metadata"] = merge_metadata(obj.get("metadata"), params["metadata"])


# Customers.


def create_customer(fake, context, params):
    customer = build(
        "customer",
        id=fake.next_id("customer"),
        created=fake.now,
        metadata={},
        email=None,
        name=None,
        invoice_prefix=fake.next_id("customer")[4:12].upper(),
    )
    _apply(customer, params, "customers")
    return fake.put("customer", customer)


def retrieve_customer(fake, context, params, id):
    customer = fake.store["customer"].get(id)
    if customer is None and id in fake.deleted_customers:
        return {"id": id, "object": "customer", "deleted": True}
    return fake.get("customer", id)


def update_customer(fake, context, params, id):
    customer = fake.get("customer", id)
    _apply(customer, params, "customers")
    return customer


def delete_customer(fake, context, params, id):
    """Delete a customer; as at Stripe, its live subscriptions are canceled."""
    from .subscriptions import end_subscription

    fake.get("customer", id)
    for subscription in list(fake.store["subscription"].values()):
        if subscription["customer"] == id and subscription["status"] != "canceled":
            end_subscription(fake, subscription, context)
    del fake.store["customer"][id]
    fake.deleted_customers.add(id)
    return deleted("customer", id)


def list_customers(fake, context, params):
    customers = list(fake.store["customer"].values())
    if "email" in params:
        customers = [c for c in customers if c.get("email") == params["email"]]
    return paginate(customers, params, "/v1/customers")


def search_customers(fake, context, params):
    return search(list(fake.store["customer"].values()), params, "/v1/customers/search")


# Products.


def create_product(fake, context, params):
    product_id = params.get("id") or fake.next_id("product")
    if product_id in fake.store["product"]:
        raise FakeStripeError(
            f"Product already exists: '{product_id}'",
            code="resource_already_exists",
            param="id",
        )
    product = build(
        "product",
        id=product_id,
        created=fake.now,
        updated=fake.now,
        metadata={},
        images=[],
        marketing_features=[],
        default_price=None,
    )
    _apply(product, params, "products")
    fake.put("product", product)
    if "default_price_data" in params:
        data = dict(params["default_price_data"])
        data["product"] = product_id
        from .prices import new_price

        price = new_price(fake, data)
        product["default_price"] = price["id"]
    return product


def retrieve_product(fake, context, params, id):
    return fake.get("product", id)


def update_product(fake, context, params, id):
    product = fake.get("product", id)
    _apply(product, params, "products")
    if "default_price" in params:
        fake.get("price", params["default_price"], param="default_price")
        product["default_price"] = params["default_price"]
    product["updated"] = fake.now
    return product


def delete_product(fake, context, params, id):
    fake.get("product", id)
    if any(price["product"] == id for price in fake.store["price"].values()):
        raise FakeStripeError(
            "This product cannot be deleted because it has one or more "
            "user-created prices."
        )
    del fake.store["product"][id]
    return deleted("product", id)


def list_products(fake, context, params):
    products = list(fake.store["product"].values())
    if "active" in params:
        products = [p for p in products if p["active"] == params["active"]]
    if "ids" in params:
        products = [p for p in products if p["id"] in params["ids"]]
    return paginate(products, params, "/v1/products")


def search_products(fake, context, params):
    return search(list(fake.store["product"].values()), params, "/v1/products/search")
