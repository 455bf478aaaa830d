"""Samplers and loaders: grouping, sharding, resumable positions, collate."""

import itertools

import numpy as np
import pytest
import torch

from maskrcnn.data import (
    CocoDetection,
    InferenceSampler,
    TrainingBatchSampler,
    build_test_loader,
    build_train_loader,
    collate,
)
from maskrcnn.data.transforms import build_transforms


@pytest.fixture(scope="module")
def train_set(synthetic_coco):
    root, _ = synthetic_coco
    return CocoDetection(
        image_dir=str(root / "train"),
        annotation_file=str(root / "annotations" / "instances_train.json"),
        transforms=build_transforms(min_size=[96, 128], max_size=200, flip_prob=0.5, jitter=True),
    )


def test_grouped_batches_hold_one_aspect_group():
    group_ids = np.array([0, 1] * 10 + [1] * 5)
    sampler = TrainingBatchSampler(size=25, batch_size=4, seed=0, group_ids=group_ids)
    batches = list(itertools.islice(iter(sampler), 30))
    assert all(len(b) == 4 for b in batches)
    for b in batches:
        assert len({group_ids[i] for i, _ in b}) == 1
    # every index shows up, roughly uniformly, over several epochs
    counts = np.bincount([i for b in batches for i, _ in b], minlength=25)
    assert counts.min() >= 2


def test_training_ranks_see_disjoint_shares_of_an_epoch():
    per_rank = []
    for rank in range(2):
        s = TrainingBatchSampler(size=20, batch_size=2, seed=3, rank=rank, world_size=2)
        per_rank.append([i for b in itertools.islice(iter(s), 5) for i, _ in b])
    assert sorted(per_rank[0] + per_rank[1]) == list(range(20))


def test_inference_sampler_covers_each_index_once():
    for size in (0, 1, 7, 10):
        shards = [list(InferenceSampler(size=size, rank=r, world_size=2)) for r in range(2)]
        assert sorted(shards[0] + shards[1]) == list(range(size))
        assert abs(len(shards[0]) - len(shards[1])) <= 1
        assert shards[0] == sorted(shards[0])  # contiguous and ordered


def test_test_loader_shards_across_simulated_ranks(train_set, monkeypatch):
    import maskrcnn.data.loader as loader_module

    seen = []
    for rank in range(2):
        monkeypatch.setattr(loader_module, "get_rank", lambda r=rank: r)
        monkeypatch.setattr(loader_module, "get_world_size", lambda: 2)
        loader = build_test_loader(train_set, batch_size=2)
        for images, targets in loader:
            assert isinstance(images, tuple) and isinstance(targets, tuple) and len(images) == len(targets)
            seen += [t["image_id"] for t in targets]
    assert sorted(seen) == sorted(r["image_id"] for r in train_set.records)


def _ids_and_sums(batch):
    images, targets = batch
    return [
        (t["image_id"], tuple(img.shape), round(float(img.sum()), 2), t["boxes"].tolist())
        for img, t in zip(images, targets)
    ]


def test_train_loader_resumes_with_the_same_batches(train_set):
    loader = build_train_loader(train_set, batch_size=2, num_workers=0, seed=5)
    it = iter(loader)
    first = [_ids_and_sums(next(it)) for _ in range(3)]
    state = loader.state_dict()
    assert state["iteration"] == 3
    after = [_ids_and_sums(next(it)) for _ in range(3)]

    resumed = build_train_loader(train_set, batch_size=2, num_workers=0, seed=5)
    resumed.load_state_dict(state)
    assert [_ids_and_sums(b) for b in itertools.islice(iter(resumed), 3)] == after
    started = build_train_loader(train_set, batch_size=2, num_workers=0, seed=5, start_iter=3)
    assert [_ids_and_sums(b) for b in itertools.islice(iter(started), 3)] == after
    other = build_train_loader(train_set, batch_size=2, num_workers=0, seed=6)
    assert [_ids_and_sums(b) for b in itertools.islice(iter(other), 3)] != first
    with pytest.raises(ValueError, match="seed"):
        other.load_state_dict(state)


def test_train_loader_batches_do_not_depend_on_workers(train_set):
    serial = build_train_loader(train_set, batch_size=2, num_workers=0, seed=1)
    parallel = build_train_loader(train_set, batch_size=2, num_workers=2, seed=1)
    a = [_ids_and_sums(b) for b in itertools.islice(iter(serial), 4)]
    b = [_ids_and_sums(b) for b in itertools.islice(iter(parallel), 4)]
    assert a == b


def test_train_batches_held_while_workers_go_on_stay_intact(train_set):
    # With workers, a batch's tensors are views of a worker's reusable shared-memory slot: batches
    # kept alive while the workers refill slots must not change (batch_transport.py).
    serial = list(itertools.islice(iter(build_train_loader(train_set, batch_size=2, num_workers=0, seed=3)), 8))
    held = list(itertools.islice(iter(build_train_loader(train_set, batch_size=2, num_workers=2, seed=3)), 8))
    for (images, targets), (images_s, targets_s) in zip(held, serial):
        assert all(torch.equal(a, b) for a, b in zip(images, images_s))
        for t, t_s in zip(targets, targets_s):
            assert t.keys() == t_s.keys()
            assert all(torch.equal(t[k], t_s[k]) if isinstance(t[k], torch.Tensor) else t[k] == t_s[k] for k in t)


def test_train_batches_are_aspect_grouped_and_well_formed(train_set):
    loader = build_train_loader(train_set, batch_size=2, num_workers=0, seed=2)
    for images, targets in itertools.islice(iter(loader), 6):
        assert len({img.shape[2] >= img.shape[1] for img in images}) == 1  # all landscape/square or all portrait
        for img, t in zip(images, targets):
            assert img.dtype == torch.uint8 and img.min() < img.max()  # the model converts it to float
            assert t["masks"].shape == (len(t["labels"]), *img.shape[1:]) and t["masks"].dtype == torch.uint8
            assert t["labels"].dtype == torch.int64 and t["labels"].min() >= 1
            b = t["boxes"]
            assert (b[:, 2] > b[:, 0]).all() and (b[:, 0] >= 0).all() and (b[:, 2] <= img.shape[2]).all()


def test_collate():
    batch = [(torch.zeros(3, 4, 5), {"a": 1}), (torch.ones(3, 6, 5), {"a": 2})]
    images, targets = collate(batch)
    assert [i.shape[1] for i in images] == [4, 6] and targets == ({"a": 1}, {"a": 2})


def test_sampler_rejects_bad_arguments():
    with pytest.raises(ValueError, match="empty"):
        TrainingBatchSampler(size=0, batch_size=2, seed=0)
    with pytest.raises(ValueError, match="rank"):
        TrainingBatchSampler(size=5, batch_size=2, seed=0, rank=2, world_size=2)
