"""Benchmarks that print tables (engine, geometry, node); speed targets live here, not in tests."""
