"""Benchmarks of AgentMargin's hot paths, run with `make benchmark`."""
