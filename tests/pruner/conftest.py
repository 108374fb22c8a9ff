"""Pruner test configuration: the shared fixtures, and TensorFlow's C++ log quieted.

Shared fixtures of the pruner tests, and TensorFlow's C++ start-up log quieted (the
repository root, for `tests.pruner.*` helpers, is put on sys.path by tests/conftest.py).

The fixtures live in helper modules: `age_fixtures` (the `age` tool under a pty, fast
encryption) and `s3_fixtures` (moto server, an isolated AWS environment, a bucket).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tests.pruner.age_fixtures import age_tool, encrypt_bytes  # noqa: F401
from tests.pruner.s3_fixtures import aws_environment, moto_endpoint, s3  # noqa: F401
