import os
from pathlib import Path

import pytest

# Keep test processes from oversubscribing small CI machines: 2 threads in a single pytest process,
# 1 in each pytest-xdist worker (the CI command, `-n 2`, runs two workers on its 2 cores).
os.environ.setdefault("OMP_NUM_THREADS", "1" if "PYTEST_XDIST_WORKER" in os.environ else "2")

TESTS = Path(__file__).resolve().parent
KINDS = ("unit", "integration", "continuity")  # the folders under tests/, each its own marker


def pytest_collection_modifyitems(config, items):
    """Mark every test by the folder it lives in: ``tests/unit/...`` -> ``unit``, and so on
    (``pytest -m unit``, ``-m "not integration"``)."""
    for item in items:
        try:
            kind = Path(item.fspath).resolve().relative_to(TESTS).parts[0]
        except ValueError:
            continue
        if kind in KINDS:
            item.add_marker(getattr(pytest.mark, kind))
