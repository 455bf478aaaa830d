"""Fixtures of the model tests (helpers live in modeling_helpers.py)."""

import pytest
from modeling_helpers import two_samples_data


@pytest.fixture
def two_samples():
    return two_samples_data()
