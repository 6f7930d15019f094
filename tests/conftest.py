"""Test-wide settings. Shared builders live in tests/builders.py (plain functions: importable anywhere)."""

from __future__ import annotations

import os

from hypothesis import settings

# `make test-fast` runs the property tests with fewer examples; `make test` and CI with the defaults.
settings.register_profile("fast", max_examples=20, deadline=None)
settings.register_profile("full", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "full"))
