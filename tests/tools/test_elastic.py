"""torchrun --max-restarts: a worker killed with SIGKILL mid-run; the restarted group finds the
run's directory and newest checkpoint by itself and ends with the weights of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from test_train import PY, REPO, final_weights, overrides, tiny  # noqa: F401  (tiny is a fixture)

ARGS = {"solver.max_iter": 8, "solver.checkpoint_period": 2, "trainer.vis_images": 0}


def _torchrun(tiny, cwd: Path, max_restarts: int) -> subprocess.Popen:  # noqa: F811
    cwd.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("MASKRCNN_RUN_STAMP", None)
    # No hydra.run.dir: the default outputs/<date>/<time> must be the same for every attempt.
    cmd = [
        PY,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        f"--max-restarts={max_restarts}",
        "--monitor-interval=0.2",
        str(REPO / "tools" / "train.py"),
        *overrides(tiny, **ARGS),
    ]
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _workers(agent_pid: int) -> dict[int, int]:
    """rank -> pid of the agent's worker processes."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (proc / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == agent_pid:
            rank = next((int(v[5:]) for v in environ if v.startswith(b"RANK=")), None)
            if rank is not None:
                found[rank] = int(proc.name)
    return found


def _finish(proc: subprocess.Popen, timeout: float) -> None:
    try:
        _, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("torchrun did not finish in time")
    assert proc.returncode == 0, stderr[-3000:]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the workers through /proc")
def test_killed_rank_restarts_and_resumes_to_the_same_weights(tiny, tmp_path):  # noqa: F811
    reference = _torchrun(tiny, tmp_path / "reference", max_restarts=0)
    _finish(reference, timeout=600)
    (ref_final,) = (tmp_path / "reference").glob("outputs/*/*/model_final.pt")

    killed = _torchrun(tiny, tmp_path / "killed", max_restarts=1)
    deadline = time.monotonic() + 600
    while not list((tmp_path / "killed").glob("outputs/*/*/model_0000002.pt")):
        assert killed.poll() is None, f"the run ended before its first checkpoint: {killed.stderr.read()[-3000:]}"
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.05)
    workers = _workers(killed.pid)
    assert sorted(workers) == [0, 1], workers
    os.kill(workers[1], signal.SIGKILL)
    _finish(killed, timeout=600)

    (run,) = (tmp_path / "killed").glob("outputs/*/*")  # one run directory for both attempts
    log = (run / "train.log").read_text()
    assert "elastic restart 1: resuming from" in log, log[-3000:]
    resumed, uninterrupted = final_weights(run / "model_final.pt"), final_weights(ref_final)
    assert resumed.keys() == uninterrupted.keys()
    for name, value in uninterrupted.items():
        torch.testing.assert_close(resumed[name], value, rtol=0, atol=0, msg=f"{name} differs after the restart")
