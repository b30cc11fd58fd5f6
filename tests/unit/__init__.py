"""Unit tests: pure functions and parsers, no model round trip (config, graph, cache keys, data checks, sweep planning, waits)."""
