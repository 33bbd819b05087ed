"""The censorship lab: network namespaces, a censoring ISP, the open internet.

``Lab`` (``topology.py``) builds a volunteer, an ISP that censors, a censor's own
servers and an "open internet" with a control helper, each in its own network
namespace, and sets up every scenario of ``scenarios.py`` at once, so that one probe
run measures them all. ``python -m tests.lab list|up|run|down`` drives it by hand;
``test_lab.py`` runs it under pytest (root only). See README.md beside this file.
"""

from __future__ import annotations

import sys
from pathlib import Path

# pytest imports the test helpers as top-level modules (``from servers import ...``,
# tests/ has no __init__.py); make that work when this package is imported as
# ``tests.lab`` from the repository root too.
TESTS_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = TESTS_DIR.parent
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))
