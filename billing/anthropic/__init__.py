"""Reconciliation of our recorded costs with Anthropic's usage and cost reports."""
