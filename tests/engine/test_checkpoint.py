"""Checkpointer: atomic writes, keep-last-K, newest lookup, checksums and fallback past unreadable
checkpoints, RNG round trip."""

import collections
import hashlib
import logging
import os
import random

import numpy as np
import pytest
import torch

import maskrcnn.engine.checkpoint as checkpoint
from maskrcnn.engine.checkpoint import (
    Checkpointer,
    CheckpointError,
    OutputDirError,
    atomic_save,
    checksum_path,
    rng_state,
    set_rng_state,
)


def test_keep_last_k_and_latest(tmp_path):
    ck = Checkpointer(directory=tmp_path, keep_last=2)
    assert ck.latest() is None
    for it in (10, 20, 30):
        ck.save({"model": {"w": torch.tensor([float(it)])}, "iteration": it})
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["model_0000020.pt", "model_0000020.pt.sha256", "model_0000030.pt", "model_0000030.pt.sha256"]
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


def _run_with_checkpoints(directory, iterations=(10, 20, 30), final=False):
    ck = Checkpointer(directory=directory, keep_last=0)
    for it in iterations:
        ck.save({"model": {"w": torch.full((64,), float(it))}, "iteration": it})
    if final:
        ck.save({"model": {"w": torch.zeros(64)}, "iteration": 40}, final=True)
    return ck


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_checksum_file_is_sha256sum_format(tmp_path):
    ck = _run_with_checkpoints(tmp_path, iterations=(10,))
    path = tmp_path / "model_0000010.pt"
    digest, name = checksum_path(path).read_text().split()
    assert name == path.name and digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert ck.latest() == path


@pytest.mark.parametrize("damage", ["truncated", "zero bytes", "wrong content"])
def test_unreadable_newest_checkpoint_falls_back_to_previous(tmp_path, caplog, damage):
    ck = _run_with_checkpoints(tmp_path)
    newest = tmp_path / "model_0000030.pt"
    if damage == "truncated":
        _truncate(newest)
    elif damage == "zero bytes":
        newest.write_bytes(b"")
    else:  # a complete, loadable torch file that is not this checkpoint
        torch.save({"model": {"w": torch.ones(64)}, "iteration": 30}, newest)
    with caplog.at_level(logging.WARNING):
        assert ck.latest() == tmp_path / "model_0000020.pt"
    assert str(newest) in caplog.text and "falling back to the previous checkpoint" in caplog.text
    with pytest.raises(CheckpointError, match=f"checkpoint {newest} does not match its checksum file"):
        Checkpointer.load(newest)
    assert Checkpointer.load(ck.latest())["iteration"] == 20


def test_unreadable_final_falls_back_to_newest_periodic(tmp_path, caplog):
    ck = _run_with_checkpoints(tmp_path, final=True)
    _truncate(ck.final_path, keep=0.9)
    with caplog.at_level(logging.WARNING):
        assert ck.latest() == tmp_path / "model_0000030.pt"
    assert "model_final.pt" in caplog.text


@pytest.mark.parametrize("content", [b"", b"not a checkpoint\n", None])
def test_checkpoint_without_checksum_file_is_checked_by_loading(tmp_path, caplog, content):
    """A crash between the checkpoint and its checksum (or a run of an older version) leaves no
    checksum file: the file is then checked by reading it."""
    ck = _run_with_checkpoints(tmp_path)
    newest = tmp_path / "model_0000030.pt"
    checksum_path(newest).unlink()
    if content is None:
        _truncate(newest)
    else:
        newest.write_bytes(content)
    with caplog.at_level(logging.WARNING):
        assert ck.latest() == tmp_path / "model_0000020.pt"
    assert f"checkpoint {newest} cannot be read" in caplog.text
    with pytest.raises(CheckpointError, match=f"checkpoint {newest} cannot be read") as info:
        Checkpointer.load(newest)
    assert "\n" not in str(info.value)  # one line, not torch's multi-line error


def test_intact_checkpoint_without_checksum_file_is_used(tmp_path):
    ck = _run_with_checkpoints(tmp_path)
    checksum_path(tmp_path / "model_0000030.pt").unlink()
    assert ck.latest() == tmp_path / "model_0000030.pt"


def test_no_readable_checkpoint_stops_with_a_clear_error(tmp_path):
    ck = _run_with_checkpoints(tmp_path, iterations=(10, 20))
    _truncate(tmp_path / "model_0000020.pt")
    (tmp_path / "model_0000010.pt").write_bytes(b"")
    with pytest.raises(CheckpointError) as info:
        ck.latest()
    message = str(info.value)
    assert f"no readable checkpoint in {tmp_path}" in message
    assert "model_0000020.pt, model_0000010.pt" in message and "delete them" in message


def test_not_a_checkpoint_dict_is_rejected(tmp_path):
    path = tmp_path / "model_0000001.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="not a dict with a 'model' state_dict"):
        Checkpointer.load(path)


def test_overwritten_checkpoint_gets_a_new_checksum(tmp_path):
    """Saving the same iteration again (a resumed run) replaces the checksum with the new file's."""
    ck = _run_with_checkpoints(tmp_path, iterations=(10,))
    ck.save({"model": {"w": torch.ones(3)}, "iteration": 10})
    assert torch.equal(Checkpointer.load(ck.latest())["model"]["w"], torch.ones(3))


def test_pruning_removes_checksum_files(tmp_path):
    ck = Checkpointer(directory=tmp_path, keep_last=1)
    for it in (1, 2, 3):
        ck.save({"model": {}, "iteration": it})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_0000003.pt", "model_0000003.pt.sha256"]


def test_output_check_protects_another_runs_checkpoints(tmp_path):
    ck = _run_with_checkpoints(tmp_path, iterations=(10, 20))
    with pytest.raises(
        OutputDirError,
        match=rf"{tmp_path} already holds another run's checkpoints "
        r"\(model_0000020.pt, model_0000010.pt\): add resume=true .*own hydra.run.dir",
    ):
        ck.check_output(resumed=False, needed_bytes=1)
    ck.check_output(resumed=True, needed_bytes=1)  # continuing that run is fine
    Checkpointer(directory=tmp_path / "fresh").check_output(resumed=False, needed_bytes=1)


def test_output_check_unwritable_or_full(tmp_path, monkeypatch):
    (tmp_path / "a_file").write_text("in the way")
    with pytest.raises(
        OutputDirError,
        match=rf"the run directory {tmp_path}/a_file/run is not writable .*"
        r"give a writable hydra.run.dir",
    ):
        Checkpointer(directory=tmp_path / "a_file" / "run").check_output(resumed=False, needed_bytes=1)
    usage = collections.namedtuple("usage", "total used free")(100 * 2**20, 99 * 2**20, 2**20)
    monkeypatch.setattr(checkpoint.shutil, "disk_usage", lambda path: usage)
    with pytest.raises(OutputDirError, match=r"has 1 MiB free, a checkpoint needs about 300 MiB: free some space"):
        Checkpointer(directory=tmp_path / "run").check_output(resumed=False, needed_bytes=300 * 2**20)
    assert not any((tmp_path / "run").iterdir())  # the write probe leaves nothing behind
