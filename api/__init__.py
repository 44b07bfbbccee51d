"""Shared plumbing of the REST API: errors, pagination, throttling, schema, URLs.

The endpoints themselves live in each domain app's `api/` package. Of the
domain apps this package imports only `customers`, for the API key, and
`api.urls`, which includes each app's URLs.
"""
