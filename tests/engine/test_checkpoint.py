"""Checkpointer: atomic writes, keep-last-K, newest lookup, RNG round trip."""

import os
import random

import numpy as np
import pytest
import torch

from maskrcnn.engine.checkpoint import Checkpointer, atomic_save, rng_state, set_rng_state


def test_keep_last_k_and_latest(tmp_path):
    ck = Checkpointer(directory=tmp_path, keep_last=2)
    assert ck.latest() is None
    for it in (10, 20, 30):
        ck.save({"model": {"w": torch.tensor([float(it)])}, "iteration": it})
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["model_0000020.pt", "model_0000030.pt"]
    assert ck.latest() == tmp_path / "model_0000030.pt"
    assert Checkpointer.load(ck.latest())["iteration"] == 30
    ck.save({"model": {}, "iteration": 40}, final=True)
    assert ck.latest() == tmp_path / "model_final.pt"
    ck.save({"model": {}, "iteration": 50})
    assert (tmp_path / "model_final.pt").exists()  # never pruned
    # keep_last <= 0 keeps everything
    keep_all = Checkpointer(directory=tmp_path / "all", keep_last=0)
    for it in range(1, 6):
        keep_all.save({"model": {}, "iteration": it})
    assert len(keep_all.periodic_checkpoints()) == 5


def test_atomic_save_leaves_old_file_intact_when_writing_fails(tmp_path):
    path = tmp_path / "model_0000001.pt"
    atomic_save({"model": {"w": torch.ones(2)}, "iteration": 1}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom while writing")

    with pytest.raises(RuntimeError, match="boom"):
        atomic_save({"model": {"w": torch.zeros(2)}, "bad": Unpicklable(), "iteration": 1}, path)
    assert torch.equal(Checkpointer.load(path)["model"]["w"], torch.ones(2))
    assert os.listdir(tmp_path) == ["model_0000001.pt"]  # no temporary file left behind


def test_save_requires_model_and_iteration(tmp_path):
    with pytest.raises(ValueError, match="'model' and 'iteration'"):
        Checkpointer(directory=tmp_path).save({"model": {}})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Checkpointer.load(tmp_path / "missing.pt")


def test_rng_state_round_trip():
    state = rng_state()
    first = (random.random(), np.random.rand(), torch.rand(3))
    set_rng_state(state)
    again = (random.random(), np.random.rand(), torch.rand(3))
    assert first[0] == again[0] and first[1] == again[1] and torch.equal(first[2], again[2])
