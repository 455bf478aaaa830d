"""A tiny run's log folder served by a real `tensorboard` process (loopback only, a free port):
its HTTP API lists the loss scalars, the evaluation metrics and the drawn predictions."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest
from test_train import PY, compose_train, load_tool, overrides, tiny  # noqa: F401  (tiny is a fixture)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read().decode())


def _tags(payload: dict) -> set[str]:
    """Tag names of a ``/data/plugin/<plugin>/tags`` answer ({run: {tag: {...}}})."""
    return {tag for run in payload.values() for tag in run}


@pytest.fixture(scope="module")
def tiny_run(tiny):  # noqa: F811
    out = tiny / "tb_run"
    args = overrides(tiny, **{"solver.max_iter": 2, "solver.warmup_iters": 1, "trainer.log_period": 1})
    load_tool("train").train(compose_train(args), out)
    return out


def test_tensorboard_serves_losses_metrics_and_prediction_images(tiny_run):
    port = _free_port()
    cmd = [
        PY,
        "-m",
        "tensorboard.main",
        "--logdir",
        str(tiny_run / "tensorboard"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--load_fast",
        "false",
        "--reload_interval",
        "1",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    scalars = images = set()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"tensorboard exited with {proc.returncode}: {proc.stderr.read()[-2000:]}")
            try:
                scalars = _tags(_get(f"{base}/data/plugin/scalars/tags"))
                images = _tags(_get(f"{base}/data/plugin/images/tags"))
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if {"loss", "bbox/AP"} <= scalars and images:
                break
            time.sleep(0.5)
        for tag in ("loss", "loss_classifier", "loss_mask", "lr", "bbox/AP", "bbox/AP50", "segm/AP"):
            assert tag in scalars, (tag, sorted(scalars))
        assert any(tag.startswith("predictions/") for tag in images), sorted(images)
        # The values behind a tag: the losses of iterations 1 and 2.
        run = next(iter(_get(f"{base}/data/plugin/scalars/tags")))
        series = _get(f"{base}/data/plugin/scalars/scalars?run={urllib.request.quote(run)}&tag=loss")
        assert [step for _, step, _ in series] == [1, 2]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
