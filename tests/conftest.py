"""Shared fixtures: where the real data lives, and the `cuda` marker's skip rule."""

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run `pytest -m cuda` on a GPU machine)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real datasets of ../shared/data (override with MASKRCNN_SHARED_DATA).

    Outside CI a missing folder skips the test with the reason; under CI=true it is a failure.
    """
    root = Path(os.environ.get("MASKRCNN_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
    if not root.is_dir():
        message = f"shared data folder {root} is missing (set MASKRCNN_SHARED_DATA)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return root
