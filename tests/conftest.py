"""Root test configuration: puts the repository root on sys.path.

Put the repository root on sys.path, so tests can import shared helpers as
`tests.<module>` (pytest runs with --import-mode=importlib, which adds no test dirs)."""

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
