"""Benchmarks: `make bench-...` targets that print figures measured side by side."""
