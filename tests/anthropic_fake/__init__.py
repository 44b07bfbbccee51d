"""A local fake of Anthropic's usage and cost report endpoints, for tests."""
