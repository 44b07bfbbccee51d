"""Stripe billing: plans, customers, metered usage, webhooks and reconciliation.

Only this package talks to Stripe, through the client that
`billing.stripe.client.stripe_client` builds. With STRIPE_API_KEY empty
every entry point logs that Stripe is off and does nothing.
"""
