"""Operator test configuration: makes the `operator_harness` helper importable.

Lets the operator tests import their helper module `operator_harness`
(the suite runs with --import-mode=importlib, which adds no test dirs to sys.path)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
