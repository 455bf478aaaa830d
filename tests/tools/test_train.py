"""tools/train.py and tools/eval.py end to end on a tiny synthetic dataset (CPU, tiny model).

One in-process run is shared by several tests: metrics.json / metrics.jsonl / TensorBoard /
predictions; tools/eval.py on its checkpoint; the resume test (a subprocess killed with SIGKILL in
the middle, then resumed, must end with the same weights). Also: a 2-process gloo run with
DistributedDataParallel, and a real `-m` sweep turned into a table by tools/ablation_report.py.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from maskrcnn.engine import evaluate as eval_run
from maskrcnn.engine import training

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
PY = sys.executable


def load_tool(name):
    spec = importlib.util.spec_from_file_location(f"tool_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# A test-only dataset config over the synthetic COCO files: tiny images, no resizing noise.
TINY_DATASET = """
name: tiny_synthetic
num_classes: 3
evaluator: coco
train:
  _target_: maskrcnn.data.coco.CocoDetection
  image_dir: ${paths.data_root}/train
  annotation_file: ${paths.data_root}/annotations/instances_train.json
  transforms:
    _target_: maskrcnn.data.transforms.Compose
    transforms:
      - _target_: maskrcnn.data.transforms.RandomHorizontalFlip
        prob: 0.5
val:
  _target_: maskrcnn.data.coco.CocoDetection
  image_dir: ${paths.data_root}/val
  annotation_file: ${paths.data_root}/annotations/instances_val.json
  filter_empty: false
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Synthetic COCO files (6 train, 2 val images of 64 px) and a config dir with the dataset."""
    from maskrcnn.data.synthetic import make_synthetic

    root = tmp_path_factory.mktemp("tiny")
    make_synthetic(out=str(root / "data"), format="coco", num_images=6, num_val=2, seed=0, image_size=64)
    (root / "cfg" / "dataset").mkdir(parents=True)
    (root / "cfg" / "dataset" / "tiny_synthetic.yaml").write_text(TINY_DATASET)
    return root


def overrides(tiny: Path, **extra) -> list[str]:
    """Small everything: 64 px images, few proposals and RoIs, a 1-conv mask head, 6 iterations."""
    values = {
        "hydra.searchpath": f"[file://{tiny / 'cfg'}]",
        "model": "mask_rcnn_r18_fpn_small",
        "dataset": "tiny_synthetic",
        "solver": "demo",
        "paths.data_root": str(tiny / "data"),
        "device": "cpu",
        "solver.max_iter": 6,
        "solver.ims_per_batch": 2,
        "solver.warmup_iters": 2,
        "solver.checkpoint_period": 2,
        "trainer.log_period": 2,
        "trainer.num_workers": 0,
        "trainer.vis_images": 1,
        "model.transform.min_size_test": 64,
        "model.transform.max_size_test": 64,
        "model.rpn.pre_nms_topk_train": 200,
        "model.rpn.post_nms_topk_train": 32,
        "model.rpn.pre_nms_topk_test": 100,
        "model.rpn.post_nms_topk_test": 20,
        "model.roi_heads.batch_size_per_image": 16,
        "model.roi_heads.detections_per_img": 10,
        "model.roi_heads.mask_head.num_convs": 1,
    }
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


def compose_train(args):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="train", overrides=args)


def final_weights(path):
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


@pytest.fixture(scope="module")
def full_run(tiny):
    """An uninterrupted 6-iteration run, in process."""
    out = tiny / "full"
    results = training.train(compose_train(overrides(tiny)), out)
    return out, results


def test_end_to_end_outputs(full_run):
    out, results = full_run
    for key in ("bbox/AP", "bbox/AP50", "segm/AP", "segm/AP75"):
        assert 0.0 <= results[key] <= 1.0, key
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["iteration"] == 6 and metrics["time/iter"] > 0
    assert metrics["bbox/AP"] == results["bbox/AP"]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records if "loss" in r] == [2, 4, 6]
    train_keys = set(records[0])
    for key in (
        "loss",
        "loss_classifier",
        "loss_box_reg",
        "loss_mask",
        "loss_objectness",
        "loss_rpn_box_reg",
        "lr",
        "time/iter",
        "time/data",
    ):
        assert key in train_keys, key
    assert any(r.get("segm/AP") is not None for r in records)
    # checkpoints: keep_last=3 of 2, 4 (6 is the final one), and the final weights
    assert sorted(p.name for p in out.glob("model_*.pt")) == ["model_0000002.pt", "model_0000004.pt", "model_final.pt"]
    assert len(list((out / "predictions" / "iter_0000006").glob("*.png"))) == 1

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0}).Reload()
    tags = events.Tags()
    for tag in ("loss", "loss_mask", "lr", "time/iter", "bbox/AP", "segm/AP50"):
        assert tag in tags["scalars"], tag
    assert [e.step for e in events.Scalars("loss")] == [2, 4, 6]
    assert any(t.startswith("predictions/") for t in tags["images"])


def test_eval_tool_reproduces_the_final_evaluation(full_run, tiny):
    out, results = full_run
    args = [a for a in overrides(tiny) if not a.startswith(("solver", "trainer", "hydra.searchpath"))]
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(
            config_name="eval",
            overrides=[
                f"hydra.searchpath=[file://{tiny / 'cfg'}]",
                *args,
                f"checkpoint={out / 'model_final.pt'}",
                "vis_images=1",
                "num_workers=0",
            ],
        )
    eval_dir = tiny / "eval"
    metrics = eval_run.run(cfg, eval_dir)
    for key in ("bbox/AP", "bbox/AP50", "segm/AP"):
        assert metrics[key] == pytest.approx(results[key], abs=1e-6), key
    written = json.loads((eval_dir / "metrics.json").read_text())
    assert written["checkpoint"].endswith("model_final.pt") and written["segm/AP"] == metrics["segm/AP"]
    assert list((eval_dir / "predictions").glob("*.png"))


def test_resume_after_sigkill_matches_uninterrupted_run(full_run, tiny):
    out_full, _ = full_run
    run_dir = tiny / "killed"
    cmd = [PY, str(REPO / "tools" / "train.py"), *overrides(tiny), f"hydra.run.dir={run_dir}"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    try:
        while not (run_dir / "model_0000002.pt").exists():
            if proc.poll() is not None:
                pytest.fail(f"the run ended before its first checkpoint: {proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("no checkpoint within 240 s")
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (run_dir / "model_final.pt").exists(), "the run finished before it was killed"

    trainer = training.build_trainer(compose_train(overrides(tiny, resume="true")), run_dir)
    assert 2 <= trainer.iteration < 6
    trainer.train()
    trainer.metrics.close()
    resumed, full = final_weights(run_dir / "model_final.pt"), final_weights(out_full / "model_final.pt")
    assert resumed.keys() == full.keys()
    for name, value in full.items():
        torch.testing.assert_close(resumed[name], value, rtol=0, atol=0, msg=f"{name} differs after resume")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world_size, port, tiny, out, result_dir):
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    from maskrcnn.engine import get_world_size, unwrap

    cfg = compose_train(
        overrides(Path(tiny), **{"solver.max_iter": 3, "solver.checkpoint_period": 0, "trainer.vis_images": 0})
    )
    trainer = training.build_trainer(cfg, out)
    assert get_world_size() == world_size
    assert isinstance(trainer.model, torch.nn.parallel.DistributedDataParallel)
    trainer.evaluate_fn = None  # weights are what this test compares
    trainer.train()
    trainer.metrics.close()
    torch.save(unwrap(trainer.model).state_dict(), Path(result_dir) / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_two_process_gloo_ddp_keeps_ranks_identical(tiny):
    import torch.multiprocessing as mp

    out, result_dir = tiny / "ddp", tiny / "ddp_weights"
    result_dir.mkdir()
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tiny), str(out), str(result_dir)), nprocs=2, join=True)
    w0, w1 = torch.load(result_dir / "rank0.pt"), torch.load(result_dir / "rank1.pt")
    for name in w0:
        torch.testing.assert_close(w0[name], w1[name], rtol=0, atol=0, msg=f"{name} differs across ranks")
    # only rank 0 writes: one final checkpoint holding the same weights, one metrics.jsonl
    final = final_weights(out / "model_final.pt")
    for name in w0:
        assert torch.equal(final[name], w0[name])
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in lines] == [2, 3]


def test_multirun_sweep_and_ablation_report(tiny):
    sweep = tiny / "sweep"
    cmd = [
        PY,
        str(REPO / "tools" / "train.py"),
        "-m",
        "experiment=ablation_synthetic",
        *overrides(tiny, **{"solver.max_iter": 2, "trainer.vis_images": 0}),
        "roi_layer=roi_pool,roi_align",
        f"hydra.sweep.dir={sweep}",
    ]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert runs == ["0_roi_pool", "1_roi_align"]
    report = load_tool("ablation_report")
    table_file = tiny / "table.md"
    assert report.main([str(sweep), "--out", str(table_file)]) == 0
    table = table_file.read_text()
    assert "**Boxes (COCO-style AP)**" in table and "**Masks (COCO-style AP)**" in table
    aggregated = json.loads((sweep / "report.json").read_text())
    assert list(aggregated["variants"]) == ["roi_pool", "roi_align"] and aggregated["baseline"] == "roi_pool"
    for run in runs:
        metrics = json.loads((sweep / run / "metrics.json").read_text())
        entry = aggregated["variants"][run.split("_", 1)[1]]
        assert entry["n"] == 1
        for key in ("bbox/AP", "bbox/AP75", "segm/AP", "segm/AP50"):
            assert entry["metrics"][key]["values"] == [metrics[key]]
        assert entry["time/iter"]["values"] == [metrics["time/iter"]]
        assert f"| `{run.split('_', 1)[1]}` | 1 | {100 * metrics['segm/AP']:.1f} |" in table
    assert (sweep / "chart.png").is_file()
