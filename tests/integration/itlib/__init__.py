"""Helpers for Trousseau's integration tests (real OpenBao, real plugin binary)."""
