"""Shared fixtures: tiny seeded data, real components, nothing mocked."""

from __future__ import annotations

import os

# Tests never reach a model hub; everything they load is local.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
