"""A real 2-job sweep through Hydra's submitit launcher (hydra/launcher=local: submitit's local
executor, the code path of hydra/launcher=slurm), one job stopped by submitit's time-out signal
and requeued, read by tools/ablation_report.py; and the SLURM launcher config as composed."""

from __future__ import annotations

import json
import subprocess

import pytest
from hydra import compose, initialize_config_dir
from test_stop_requeue import env, signalling_dataset
from test_train import CONFIGS, PY, REPO, load_tool, overrides, tiny  # noqa: F401  (tiny is a fixture)

try:
    import hydra_plugins.hydra_submitit_launcher  # noqa: F401

    HAVE_SUBMITIT = True
except ImportError:
    HAVE_SUBMITIT = False
needs_submitit = pytest.mark.skipif(
    not HAVE_SUBMITIT,
    reason="hydra-submitit-launcher is not installed (pip install -e '.[cluster]'; the dev extra includes it)",
)


@needs_submitit
def test_sweep_through_submitit_local_executor_one_job_requeued_and_its_report(tiny):  # noqa: F811
    # The roi_pool job receives SIGUSR2 (what the local executor sends before its time-out, and
    # SLURM before the time limit) during iteration 2, from its own training set.
    dataset = signalling_dataset(tiny, name="sigusr2_roi_pool", sig="SIGUSR2", read=3, when="roi_pool")
    sweep = tiny / "submitit_sweep"
    cmd = [
        PY,
        str(REPO / "tools" / "train.py"),
        "-m",
        "hydra/launcher=local",
        "experiment=ablation_synthetic",
        *overrides(tiny, **{"solver.max_iter": 3, "solver.warmup_iters": 1, "trainer.vis_images": 0}),
        f"dataset={dataset}",
        "trainer.num_workers=0",
        "roi_layer=roi_pool,roi_align",
        f"hydra.sweep.dir={sweep}",
    ]
    done = subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    # Each job ran in a process of submitit's own, logged under .submitit/<job id>/.
    logs = list((sweep / ".submitit").glob("*/*_log.out"))
    assert len(logs) == 2, sorted(p.name for p in (sweep / ".submitit").rglob("*"))
    runs = sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert runs == ["0_roi_pool", "1_roi_align"]  # the requeued job came back to its own folder
    stopped = (sweep / "0_roi_pool" / "train.log").read_text()
    checkpoint = sweep / "0_roi_pool" / "model_0000002.pt"
    assert f"SIGUSR2 during iteration 2 at rank 0: stopped after iteration 2, checkpoint {checkpoint}" in stopped
    assert "requeueing this job through submitit" in stopped
    assert f": resuming from {checkpoint}" in stopped and "requeued job local:" in stopped
    assert "resuming" not in (sweep / "1_roi_align" / "train.log").read_text()
    assert "Requeued job" in "".join(p.read_text() for p in logs)  # submitit's own line
    assert load_tool("ablation_report").main([str(sweep), "--no-chart"]) == 0
    report = json.loads((sweep / "report.json").read_text())
    assert list(report["variants"]) == ["roi_pool", "roi_align"]
    for run in runs:
        metrics = json.loads((sweep / run / "metrics.json").read_text())
        entry = report["variants"][run.split("_", 1)[1]]
        assert entry["n"] == 1 and metrics["iteration"] == 3
        assert entry["metrics"]["segm/AP"]["values"] == [metrics["segm/AP"]]
    assert "| `roi_align` | 1 |" in (sweep / "report.md").read_text()


@needs_submitit
def test_slurm_launcher_config_one_task_per_gpu_and_overridable():
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(
            config_name="train",
            return_hydra_config=True,
            overrides=[
                "hydra/launcher=slurm",
                "hydra.launcher.gpus_per_node=4",
                "hydra.launcher.partition=gpu",
                "hydra.launcher.timeout_min=90",
            ],
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.gpus_per_node, launcher.tasks_per_node, launcher.partition, launcher.timeout_min) == (
        4,
        4,
        "gpu",
        90,
    )


def test_export_submitit_task_env_gives_torchrun_variables(monkeypatch):
    submitit = pytest.importorskip("submitit", reason="submitit is not installed (pip install -e '.[cluster]')")
    from maskrcnn.engine.cluster import export_submitit_task_env

    # export_submitit_task_env writes os.environ directly: setenv first so that monkeypatch's undo
    # removes these keys again (delenv of an absent key records nothing, and a leaked RANK /
    # WORLD_SIZE makes every later in-process training wait for a process group forever).
    for key in (
        "RANK",
        "WORLD_SIZE",
        "LOCAL_RANK",
        "LOCAL_WORLD_SIZE",
        "MASTER_ADDR",
        "MASTER_PORT",
        "SUBMITIT_EXECUTOR",
    ):
        monkeypatch.setenv(key, "unset")
        monkeypatch.delenv(key)
    assert export_submitit_task_env() is False  # not in a submitit job
    # Task 5 of a 2-node x 4-task SLURM job, as SLURM describes it to the task.
    slurm = {
        "SUBMITIT_EXECUTOR": "slurm",
        "SLURM_JOB_ID": "1234",
        "SLURM_NTASKS": "8",
        "SLURM_PROCID": "5",
        "SLURM_LOCALID": "1",
        "SLURM_JOB_NUM_NODES": "2",
        "SLURM_NODEID": "1",
        "SLURM_JOB_NODELIST": "gpu[07-08]",
    }
    for key, value in slurm.items():
        monkeypatch.setenv(key, value)
    assert isinstance(submitit.JobEnvironment(), submitit.slurm.slurm.SlurmJobEnvironment)
    assert export_submitit_task_env() is True
    import os

    got = {k: os.environ[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR")}
    assert got == {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4", "MASTER_ADDR": "gpu07"}
    assert 20000 <= int(os.environ["MASTER_PORT"]) <= 60000
