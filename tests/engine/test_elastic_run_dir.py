"""The run directory's stamp under torchelastic: the agent's start time, the same for every restart."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from maskrcnn import elastic

SOURCE = Path(elastic.__file__)
PRINT_STAMP = (
    f"import importlib.util as u; s = u.spec_from_file_location('e', {str(SOURCE)!r}); m = u.module_from_spec(s); "
    f"s.loader.exec_module(m); print(m.run_stamp(), m.restart_count())"
)


def _child_stamp(**env):
    full = {k: v for k, v in os.environ.items() if not k.startswith("TORCHELASTIC_")}
    out = subprocess.run(
        [sys.executable, "-c", PRINT_STAMP], env={**full, **env}, capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the parent's start time from /proc")
def test_workers_of_one_agent_share_its_start_time_as_stamp():
    first, restarts = _child_stamp(TORCHELASTIC_RUN_ID="abc", TORCHELASTIC_RESTART_COUNT="0")
    time.sleep(1.1)
    again, restarts_again = _child_stamp(TORCHELASTIC_RUN_ID="abc", TORCHELASTIC_RESTART_COUNT="1")
    # this test process plays the agent: the stamp is when it started, not when a worker asks
    assert first == again and (restarts, restarts_again) == (0, 1)
    before = time.strftime("%Y-%m-%d/%H-%M-%S")
    plain, count = _child_stamp()  # without torchelastic: now
    assert plain >= before > first and count == 0
