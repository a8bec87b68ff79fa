"""Make the docs build hooks and tools importable by the tests (they are loaded by path)."""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1]
for folder in ("hooks", "tools"):
    if str(DOCS / folder) not in sys.path:
        sys.path.insert(0, str(DOCS / folder))
