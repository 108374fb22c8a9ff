"""Quiet TensorFlow's C++ start-up log for the pruner tests (the repository root, for
`tests.pruner.builders`, is put on sys.path by tests/conftest.py)."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
