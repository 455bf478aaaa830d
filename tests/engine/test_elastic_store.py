"""A restarted torchrun attempt must not read the store keys of the attempt before it.

torchrun's agent keeps one TCPStore for the whole job, so after a restart gloo's rendezvous keys of
the dead attempt are still there. The scenario below makes the race certain: in attempt 0 rank 1
dies after joining the group; in attempt 1 rank 1 starts its rendezvous 3 s late, so rank 0 reads
rank 1's address before rank 1 rewrites it. With torch's plain ``env://`` rank 0 then connects to
the dead process ("connectFullMesh ... Connection refused") and the job fails; with
``init_distributed`` (an attempt-prefixed store) both ranks meet and the job ends with exit 0.

The job's exit status also depends on how each worker leaves: a rank that reached interpreter
finalization with a live process group could abort (SIGABRT, "terminate called without an active
exception") while gloo's thread released the barrier it had just finished, failing the job about
one run in ten. ``init_distributed`` destroys the group at exit; an exit hook registered before it
(so run after it) checks that the group is gone by then.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

WORKER = textwrap.dedent("""
    import atexit, os, sys, time
    import torch, torch.distributed as dist
    from maskrcnn.distributed import init_distributed

    attempt, rank = int(os.environ["TORCHELASTIC_RESTART_COUNT"]), int(os.environ["RANK"])

    @atexit.register  # runs after the hooks registered later, init_distributed's among them
    def report_group_at_exit():
        if rank == 0 and attempt == 1:
            open(sys.argv[1], "a").write(f", group alive at exit: {dist.is_initialized()}")

    if attempt == 1 and rank == 1:
        time.sleep(3)  # let rank 0 reach the rendezvous first and find the old attempt's keys
    init_distributed("cpu", timeout_minutes=1)
    total = torch.ones(1)
    dist.all_reduce(total)
    if attempt == 0 and rank == 1:
        os._exit(1)  # die after joining: the agent restarts the group
    dist.barrier()
    if rank == 0:
        open(sys.argv[1], "w").write(f"attempt {attempt}, world {int(total.item())}")
""")


@pytest.mark.skipif(sys.platform == "win32", reason="torchrun with gloo on localhost")
def test_restarted_attempt_meets_in_a_fresh_store_namespace(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    done = tmp_path / "done.txt"
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "--max-restarts=1",
        "--monitor-interval=0.2",
        str(script),
        str(done),
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert done.read_text() == "attempt 1, world 2, group alive at exit: False"
