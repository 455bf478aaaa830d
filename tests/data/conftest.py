"""Synthetic datasets written once per test session, in both formats, with their in-memory truth."""

import pytest

from maskrcnn.data.synthetic import make_synthetic

NUM_TRAIN, NUM_VAL, SEED = 12, 4, 7


@pytest.fixture(scope="session")
def synthetic_coco(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic_coco")
    truth = make_synthetic(out=str(out), format="coco", num_images=NUM_TRAIN, num_val=NUM_VAL, seed=SEED)
    return out, truth


@pytest.fixture(scope="session")
def synthetic_voc(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic_voc")
    truth = make_synthetic(out=str(out), format="voc", num_images=NUM_TRAIN, num_val=NUM_VAL, seed=SEED)
    return out, truth
