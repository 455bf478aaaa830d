"""SIGTERM / SIGUSR1 / SIGUSR2 stop the training loop after the iteration in progress with a
checkpoint (the periodic kind), and a run resumed from it ends with the weights of an uninterrupted
run; a signal during a checkpoint write neither interrupts nor corrupts it. The signals are sent
by the process to itself from inside the loader, so the iteration they arrive in is exact."""

from __future__ import annotations

import os
import signal

import pytest
import torch
from test_trainer import Loader, make_trainer

from maskrcnn.engine import Checkpointer
from maskrcnn.engine import checkpoint as checkpoint_module
from maskrcnn.engine.checkpoint import verify_checksum
from maskrcnn.engine.stop_signals import TrainingStopped


class SignallingLoader(Loader):
    """``Loader`` that sends ``sig`` to this process while it hands out the batch of iteration ``at``."""

    def __init__(self, *, sig: signal.Signals, at: int):
        super().__init__()
        self.sig, self.at = sig, at

    def __iter__(self):
        for batch in super().__iter__():
            if self.position == self.at:
                os.kill(os.getpid(), self.sig)
            yield batch


def _weights_equal(a, b):
    for name, value in a.model.state_dict().items():
        torch.testing.assert_close(b.model.state_dict()[name], value, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2])
def test_signal_stops_after_the_iteration_in_progress_and_the_resume_is_exact(tmp_path, sig, caplog):
    full = make_trainer(tmp_path / "full", checkpoint_period=2)
    full.train()
    stopped = make_trainer(tmp_path / "stopped", checkpoint_period=2)
    stopped.train_loader = SignallingLoader(sig=sig, at=3)
    before = signal.getsignal(sig)
    with pytest.raises(TrainingStopped) as info:
        stopped.train()
    assert (info.value.iteration, info.value.signals) == (3, [sig.name])
    assert info.value.checkpoint == tmp_path / "stopped" / "model_0000003.pt"
    assert verify_checksum(info.value.checkpoint)  # the same checksummed save as the periodic ones
    assert not (tmp_path / "stopped" / "model_final.pt").exists()
    assert signal.getsignal(sig) is before  # the handler before training is back
    assert f"{sig.name} during iteration 3 at rank 0: stopped after iteration 3" in caplog.text

    resumed = make_trainer(tmp_path / "stopped", seed=123)  # everything must come from the file
    resumed.load_state_dict(Checkpointer.load(info.value.checkpoint))
    resumed.train()
    _weights_equal(full, resumed)


def test_signals_during_checkpoint_writes_leave_every_checkpoint_whole(tmp_path, monkeypatch):
    """A first signal arrives half-way through the periodic write of iteration 2 and a second one
    during the stop's own write: both writes complete, the run stops after iteration 3, and it
    resumes to the uninterrupted weights."""
    full = make_trainer(tmp_path / "full", checkpoint_period=2)
    full.train()
    real_save = torch.save
    during = {2: signal.SIGUSR2, 3: signal.SIGTERM}  # iteration of the checkpoint -> signal sent mid-write

    def save_with_a_signal_inside(obj, f):
        real_save(obj, f)  # the bytes are in the temporary file, not yet fsynced nor renamed
        if obj["iteration"] in during:
            os.kill(os.getpid(), during.pop(obj["iteration"]))
            f.write(b"")  # a bytecode after the signal: its handler has run inside the write

    monkeypatch.setattr(checkpoint_module.torch, "save", save_with_a_signal_inside)
    run = make_trainer(tmp_path / "run", checkpoint_period=2)
    with pytest.raises(TrainingStopped) as info:
        run.train()
    assert during == {}, "a signal was not sent"
    assert (info.value.iteration, info.value.signals) == (3, ["SIGUSR2", "SIGTERM"])
    for name in ("model_0000002.pt", "model_0000003.pt"):
        path = tmp_path / "run" / name
        assert verify_checksum(path) and Checkpointer.load(path)["iteration"] == int(name[6:13])
    assert Checkpointer(directory=tmp_path / "run").latest() == info.value.checkpoint
    assert not list((tmp_path / "run").glob(".*.tmp")), "a temporary file was left behind"

    monkeypatch.undo()
    resumed = make_trainer(tmp_path / "run", seed=123)
    resumed.load_state_dict(Checkpointer.load(info.value.checkpoint))
    resumed.train()
    _weights_equal(full, resumed)
