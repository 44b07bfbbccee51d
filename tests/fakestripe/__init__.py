"""A stateful fake Stripe that the real stripe-python client talks to.

``FakeStripe`` keeps an in-memory account (customers, products, prices,
billing meters and meter events, subscriptions, invoice items, invoices and
events) and checks each request against stripe-python's generated parameter
types. ``fake.client()`` serves it in process; ``FakeStripeServer`` serves it
on a loopback port for tests that need real sockets.

Behaviour worth knowing when writing tests against it:

- A price's ``tiers`` appear only with ``expand=["tiers"]`` (``"data.tiers"``
  on lists), as at Stripe; ``fake.store["price"]`` always has them.
- Creating a subscription bills the licensed items for the first period at
  once (``billing_reason="subscription_create"``, paid), as Stripe does.
- ``close_period`` bills licensed items in advance, metered items from the
  meter's usage in the period that ended, and pending invoice items.
- Parameters that Stripe accepts but the fake would ignore (a subscription's
  ``trial_period_days``, a customer's ``payment_method``) are rejected with
  code ``fake_parameter_not_implemented``.
- Webhook signatures use wall-clock time by default, because stripe-python
  checks them against ``time.time()``, not against the fake's clock.
- The in-process client skips stripe-python's retry sleeps and lists them in
  ``fake.retry_sleeps``; over the loopback server the real sleeps happen.
"""

from .fake import FakeStripe, RecordedRequest
from .transport import FakeHTTPClient, FakeStripeServer

__all__ = ["FakeHTTPClient", "FakeStripe", "FakeStripeServer", "RecordedRequest"]
