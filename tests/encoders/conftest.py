"""Encoder fixtures live in tests/conftest.py (shared with the indexer and search tests)."""
