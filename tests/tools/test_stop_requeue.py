"""A signal to tools/train.py: the run stops after the iteration in progress with a checkpoint and
exit status 75; the rerun (1 process, resume=true) or the requeued SLURM job (2 gloo ranks, the
same job id: no flag) ends with the weights of an uninterrupted run. The sweep through submitit's
local executor, one point requeued, is in test_submitit_sweep.py.

The signal comes from the training set of the signalled process itself (signalling_dataset.py),
so the iteration it arrives in is exact: no timing in these tests."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import torch
from test_train import PY, REPO, TINY_DATASET, compose_train, final_weights, overrides, tiny  # noqa: F401

from maskrcnn.engine import training
from maskrcnn.engine.requeue import EXIT_STOPPED

HERE = Path(__file__).resolve().parent
ARGS = {"solver.max_iter": 6, "solver.checkpoint_period": 0, "trainer.vis_images": 0}


def signalling_dataset(root: Path, *, name: str, sig: str, read: int, rank: int = 0, when: str = "") -> str:
    """A dataset config ``name`` over the tiny data in ``root`` whose training set sends ``sig`` at
    its ``read``-th image read in rank ``rank``, once (per sweep point with ``when``). Returns the name."""
    lines = TINY_DATASET.replace(
        "train:\n  _target_: maskrcnn.data.coco.CocoDetection",
        "train_data:\n  _target_: maskrcnn.data.coco.CocoDetection",
    )
    marker = root / "signalled" / (f"{name}_${{roi_layer.name}}" if when else name)
    extra = f"  when: ${{roi_layer.name}}\n  signal_when: {when}\n" if when else ""
    lines += (
        f"train:\n  _target_: signalling_dataset.SignalAt\n  dataset: ${{..train_data}}\n  sig: {sig}\n"
        f"  read: {read}\n  rank: {rank}\n  marker: {marker}\n{extra}"
    )
    (root / "cfg" / "dataset" / f"{name}.yaml").write_text(lines)
    return name


def env(**extra) -> dict:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SUBMITIT_", "TORCHELASTIC_"))}
    path = os.pathsep.join([str(REPO), str(HERE), os.environ.get("PYTHONPATH", "")])
    return {**base, "PYTHONPATH": path, **extra}  # the thread count of the in-process reference run


def assert_same_weights(resumed: Path, uninterrupted: Path) -> None:
    a, b = final_weights(resumed), final_weights(uninterrupted)
    assert a.keys() == b.keys()
    for name, value in b.items():
        torch.testing.assert_close(a[name], value, rtol=0, atol=0, msg=f"{name} differs after the stop")


def test_signal_to_train_py_stops_with_a_checkpoint_and_the_rerun_is_exact(tiny):  # noqa: F811
    reference = tiny / "stop_reference"
    training.train(compose_train(overrides(tiny, **ARGS)), reference)
    # 2 images per iteration: the 7th read is the first of iteration 4.
    dataset = signalling_dataset(tiny, name="sigusr1_at_4", sig="SIGUSR1", read=7)
    run = tiny / "stopped"
    cmd = [PY, str(REPO / "tools" / "train.py"), *overrides(tiny, **ARGS, dataset=dataset), f"hydra.run.dir={run}"]
    done = subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True, timeout=400)
    assert done.returncode == EXIT_STOPPED, done.stderr[-3000:]
    assert sorted(p.name for p in run.glob("model_*.pt")) == ["model_0000004.pt"]
    log = (run / "train.log").read_text()
    assert (
        f"SIGUSR1 during iteration 4 at rank 0: stopped after iteration 4, checkpoint {run / 'model_0000004.pt'}" in log
    )
    assert f"exit status 75 (SIGUSR1): continue with the same command and hydra.run.dir={run} resume=true" in log

    resumed = training.build_trainer(compose_train(overrides(tiny, **ARGS, dataset=dataset, resume="true")), run)
    assert resumed.iteration == 4
    resumed.train()
    resumed.metrics.close()
    assert_same_weights(run / "model_final.pt", reference / "model_final.pt")


def _torchrun(tiny: Path, run: Path, dataset: str, **env_extra) -> subprocess.CompletedProcess:  # noqa: F811
    cmd = [
        PY,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "--monitor-interval=0.2",
        str(REPO / "tools" / "train.py"),
        *overrides(tiny, **ARGS, dataset=dataset),
        f"hydra.run.dir={run}",
    ]
    return subprocess.run(cmd, cwd=REPO, env=env(**env_extra), capture_output=True, text=True, timeout=600)


def test_two_ranks_agree_on_the_stop_and_the_requeued_slurm_job_resumes_by_itself(tiny):  # noqa: F811
    # Rank 1 alone receives SIGUSR2 during iteration 3 (1 image per rank and iteration); rank 0,
    # which writes the checkpoint, learns it from the agreement.
    dataset = signalling_dataset(tiny, name="sigusr2_at_3_rank1", sig="SIGUSR2", read=3, rank=1)
    reference = _torchrun(tiny, tiny / "ddp_reference", "tiny_synthetic")
    assert reference.returncode == 0, reference.stderr[-3000:]
    run = (
        tiny / "ddp_job_4242"
    )  # a SLURM script names its run folder after its job: hydra.run.dir=outputs/$SLURM_JOB_ID
    stopped = _torchrun(tiny, run, dataset, SLURM_JOB_ID="4242")
    assert stopped.returncode != 0 and "exitcode  : 75" in stopped.stderr, stopped.stderr[-3000:]
    assert sorted(p.name for p in run.glob("model_*.pt")) == ["model_0000003.pt"]
    log = (run / "train.log").read_text()
    assert (
        f"SIGUSR2 during iteration 3 at rank 1: stopped after iteration 3, checkpoint {run / 'model_0000003.pt'}" in log
    )
    assert "exit status 75 (SIGUSR2): a requeue of this job continues from it by itself" in log

    requeued = _torchrun(tiny, run, dataset, SLURM_JOB_ID="4242", SLURM_RESTART_COUNT="1")  # no resume=true
    assert requeued.returncode == 0, requeued.stderr[-3000:]
    log = (run / "train.log").read_text()
    assert f"requeued job slurm:4242 (SLURM restart 1): resuming from {run / 'model_0000003.pt'}" in log
    assert_same_weights(run / "model_final.pt", tiny / "ddp_reference" / "model_final.pt")
