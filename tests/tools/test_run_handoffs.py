"""train -> eval -> predict through the command lines, on one tiny run (CPU, 64 px images).

The run's training transforms resize to 96 px and always mirror, so any evaluation that applied
them would score mirrored, rescaled boxes against the files' annotations. The checks:
- eval of the run's checkpoint with no model overrides reproduces the run's final evaluation;
- eval on the train split equals a clean evaluation of that split (no transforms), computed here;
- predict on the val image folder, then eval results= on its output, equals the in-process evaluation;
- the checkpoint's config also works through the run's own .hydra folder, and a mismatching
  explicit config stops with one message naming both values.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from maskrcnn.engine import evaluate as eval_run

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable

TINY_DATASET = """
name: tiny_augmented
num_classes: 3
evaluator: coco
train:
  _target_: maskrcnn.data.coco.CocoDetection
  image_dir: ${paths.data_root}/train
  annotation_file: ${paths.data_root}/annotations/instances_train.json
  filter_empty: false
  transforms:
    _target_: maskrcnn.data.transforms.build_transforms
    min_size: [96]
    max_size: 160
    flip_prob: 1.0
val:
  _target_: maskrcnn.data.coco.CocoDetection
  image_dir: ${paths.data_root}/val
  annotation_file: ${paths.data_root}/annotations/instances_val.json
  filter_empty: false
"""

# Small everything; the model's test-time keys differ from the config file's defaults, so an
# evaluation that does not rebuild the model from the run gives other numbers (or fails).
TRAIN_OVERRIDES = [
    "model=mask_rcnn_r18_fpn_small",
    "dataset=tiny_augmented",
    "solver=demo",
    "device=cpu",
    "solver.max_iter=6",
    "solver.ims_per_batch=2",
    "solver.warmup_iters=2",
    "solver.checkpoint_period=0",
    "trainer.log_period=3",
    "trainer.num_workers=0",
    "trainer.vis_images=0",
    "model.transform.min_size_test=64",
    "model.transform.max_size_test=64",
    "model.rpn.pre_nms_topk_train=200",
    "model.rpn.post_nms_topk_train=32",
    "model.rpn.pre_nms_topk_test=100",
    "model.rpn.post_nms_topk_test=20",
    "model.roi_heads.batch_size_per_image=16",
    "model.roi_heads.detections_per_img=10",
    "model.roi_heads.mask_head.num_convs=1",
]
# Metrics compared: the overall ones (not the per-category APs).
KEYS = (
    "bbox/AP",
    "bbox/AP50",
    "bbox/AP75",
    "bbox/AR1",
    "bbox/AR10",
    "bbox/AR100",
    "segm/AP",
    "segm/AP50",
    "segm/AR100",
)


def cli(tool: str, *args: str, cwd: Path, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [PY, str(REPO / "tools" / f"{tool}.py"), *args], cwd=cwd, capture_output=True, text=True, timeout=400
    )
    if ok:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 6-iteration training run through tools/train.py; returns (tmp, run folder, data folder)."""
    from maskrcnn.data.synthetic import make_synthetic

    tmp = tmp_path_factory.mktemp("handoffs")
    data = tmp / "data"
    make_synthetic(out=str(data), format="coco", num_images=6, num_val=2, seed=0, image_size=64)
    (tmp / "cfg" / "dataset").mkdir(parents=True)
    (tmp / "cfg" / "dataset" / "tiny_augmented.yaml").write_text(TINY_DATASET)
    run_dir = tmp / "run"
    cli(
        "train",
        f"hydra.searchpath=[file://{tmp / 'cfg'}]",
        f"paths.data_root={data}",
        *TRAIN_OVERRIDES,
        f"hydra.run.dir={run_dir}",
        cwd=tmp,
    )
    return tmp, run_dir, data


def metrics_of(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


def assert_same(actual: dict, expected: dict):
    for key in KEYS:
        assert actual[key] == pytest.approx(expected[key], abs=1e-9), key


def test_eval_of_a_run_checkpoint_needs_no_model_overrides(run):
    tmp, run_dir, _ = run
    out = tmp / "eval_val"
    proc = cli(
        "eval",
        f"checkpoint={run_dir / 'model_final.pt'}",
        "num_workers=0",
        "vis_images=0",
        f"hydra.run.dir={out}",
        cwd=tmp,
    )
    assert "rebuilt from the checkpoint" in proc.stderr + proc.stdout
    trained = metrics_of(run_dir)
    assert any(trained[key] > 0 for key in KEYS)  # a comparison of zeros would prove nothing
    assert_same(metrics_of(out), trained)
    written = metrics_of(out)
    assert written["dataset"] == "tiny_augmented" and written["split"] == "val"


def test_eval_on_the_train_split_uses_no_training_transforms(run):
    tmp, run_dir, data = run
    out = tmp / "eval_train"
    # Many low-score detections: the barely trained model then scores above zero on every metric.
    many = {
        "model.roi_heads.detections_per_img": 100,
        "model.roi_heads.score_thresh": 0.0,
        "model.rpn.post_nms_topk_test": 100,
    }
    cli(
        "eval",
        f"checkpoint={run_dir / 'model_final.pt'}",
        "split=train",
        *(f"{k}={v}" for k, v in many.items()),
        "num_workers=0",
        "vis_images=0",
        f"hydra.run.dir={out}",
        cwd=tmp,
    )
    # The clean evaluation, here: the run's model config, the train split without transforms.
    from maskrcnn.data import CocoDetection, build_test_loader
    from maskrcnn.engine import inference_on_dataset
    from maskrcnn.evaluation import build_evaluator

    state = torch.load(run_dir / "model_final.pt", map_location="cpu", weights_only=False)
    run_cfg = OmegaConf.create(state["meta"]["config"])
    for key, value in many.items():
        OmegaConf.update(run_cfg, key, value)
    model = instantiate(run_cfg.model)
    model.load_state_dict(state["model"])
    dataset = CocoDetection(
        image_dir=str(data / "train"),
        annotation_file=str(data / "annotations" / "instances_train.json"),
        filter_empty=False,
        transforms=None,
    )
    clean = inference_on_dataset(
        model,
        build_test_loader(dataset, batch_size=1, num_workers=0),
        build_evaluator(dataset, "coco"),
        device=torch.device("cpu"),
    )
    assert all(clean[key] > 0 for key in ("bbox/AP", "bbox/AR100", "segm/AR100"))
    assert_same(metrics_of(out), clean)


def test_predict_then_score_the_results_file(run):
    tmp, run_dir, data = run
    results = tmp / "pred" / "results.json"
    cli(
        "predict",
        f"checkpoint={run_dir / 'model_final.pt'}",
        f"inputs=[{data / 'val'}]",
        f"output={results}",
        "visualize=true",
        f"hydra.run.dir={tmp / 'pred_hydra'}",
        cwd=tmp,
    )
    written = json.loads(results.read_text())
    gt = json.loads((data / "annotations" / "instances_val.json").read_text())
    ids = {image["file_name"]: image["id"] for image in gt["images"]}
    assert {r["file_name"]: r["image_id"] for r in written} == ids  # the dataset's ids, 1.. here
    drawn = sorted(p.name for p in (tmp / "pred" / "results_vis").iterdir())
    assert drawn == sorted(f"image_{i}_{Path(name).stem}.png" for name, i in ids.items())
    out = tmp / "eval_results"
    cli(
        "eval",
        f"results={results}",
        f"hydra.searchpath=[file://{tmp / 'cfg'}]",
        "dataset=tiny_augmented",
        f"paths.data_root={data}",
        f"hydra.run.dir={out}",
        cwd=tmp,
    )
    # In-process evaluation of the same checkpoint on the same split: the run's final evaluation.
    assert_same(metrics_of(out), metrics_of(run_dir))


def test_the_run_folder_config_and_mismatches(run):
    tmp, run_dir, _ = run
    from maskrcnn.engine import ConfigError

    ckpt = run_dir / "model_final.pt"
    # The run's own .hydra/config.yaml as the eval config: training-only keys are ignored.
    with initialize_config_dir(config_dir=str(run_dir / ".hydra"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"+checkpoint={ckpt}", "+vis_images=0", "+num_workers=0"])
    assert_same(eval_run.run(cfg, tmp / "eval_hydra_dir", overrides=[]), metrics_of(run_dir))
    with initialize_config_dir(config_dir=str(run_dir / ".hydra"), version_base="1.3"):
        cfg = compose(config_name="config")
    with pytest.raises(ConfigError, match=r"\+checkpoint=<run>/model_final.pt"):
        eval_run.run(cfg, tmp / "unused", overrides=[])
    # Naming the trained model config again keeps the run's changes to it (its test-time size here).
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        overrides = [f"checkpoint={ckpt}", "model=mask_rcnn_r18_fpn_small", "vis_images=0", "num_workers=0"]
        cfg = compose(config_name="eval", overrides=overrides)
    assert_same(eval_run.run(cfg, tmp / "eval_same_model", overrides=overrides), metrics_of(run_dir))
    # A checkpoint without the config (older runs): the run folder's .hydra/config.yaml is used.
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    legacy = run_dir / "model_legacy.pt"
    torch.save({"model": state["model"], "iteration": state["iteration"]}, legacy)
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(config_name="eval", overrides=[f"checkpoint={legacy}", "vis_images=0", "num_workers=0"])
    assert_same(eval_run.run(cfg, tmp / "eval_legacy", overrides=[]), metrics_of(run_dir))
    legacy.unlink()
    # An explicit config that disagrees with the checkpoint: one message, both values, the fix.
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        overrides = [f"checkpoint={ckpt}", "dataset.num_classes=5"]
        cfg = compose(config_name="eval", overrides=overrides)
    with pytest.raises(ConfigError, match=r"num_classes=3.*dataset.num_classes=5.*add dataset.num_classes=3"):
        eval_run.run(cfg, tmp / "unused", overrides=overrides)
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        overrides = [f"checkpoint={ckpt}", "model=mask_rcnn_r50_fpn"]
        cfg = compose(config_name="eval", overrides=overrides)
    with pytest.raises(ConfigError, match=r"model=mask_rcnn_r18_fpn_small.*drop model=mask_rcnn_r50_fpn"):
        eval_run.run(cfg, tmp / "unused", overrides=overrides)


def test_resume_without_a_run_folder_stops_and_failed_runs_leave_no_folder(tmp_path):
    proc = cli(
        "train",
        "model=mask_rcnn_r18_fpn_small",
        "dataset=synthetic",
        "resume=true",
        "device=cpu",
        cwd=tmp_path,
        ok=False,
    )
    assert proc.returncode != 0
    assert "resume=true continues a run in the folder named by hydra.run.dir" in proc.stderr
    assert "add hydra.run.dir=" in proc.stderr
    assert list(tmp_path.iterdir()) == [], "the failed run left a folder behind"
    # A config error in a named run folder: the empty folder goes, one with content stays.
    proc = cli("train", "solver.base_lr=-1", f"hydra.run.dir={tmp_path / 'bad'}", cwd=tmp_path, ok=False)
    assert "solver.base_lr" in proc.stderr and not (tmp_path / "bad").exists()
    # The same for a failed evaluation.
    proc = cli("eval", "checkpoint=missing.pt", f"hydra.run.dir={tmp_path / 'eval'}", cwd=tmp_path, ok=False)
    assert "missing.pt does not exist" in proc.stderr and not (tmp_path / "eval").exists()


def test_only_folders_without_content_are_removed(tmp_path, monkeypatch):
    from maskrcnn.engine.run_dir import remove_empty_run_dir

    monkeypatch.chdir(tmp_path)
    (tmp_path / "keep_me").mkdir()  # a sibling: the shared parent stays
    for name in ("empty", "kept", "odd"):
        run_dir = tmp_path / "outputs" / name / "12-00-00"
        (run_dir / ".hydra").mkdir(parents=True)
        (run_dir / ".hydra" / "config.yaml").write_text("{}")
        (run_dir / "train.log").write_text("error")
    (tmp_path / "outputs" / "kept" / "12-00-00" / "model_0000002.pt").write_text("weights")
    (tmp_path / "outputs" / "odd" / "12-00-00" / ".hydra" / "mine.txt").write_text("notes")
    assert not remove_empty_run_dir(tmp_path / "outputs" / "kept" / "12-00-00", log_name="train.log")
    assert not remove_empty_run_dir(tmp_path / "outputs" / "odd" / "12-00-00", log_name="train.log")
    assert remove_empty_run_dir(Path("outputs/empty/12-00-00"), log_name="train.log")
    assert not (tmp_path / "outputs" / "empty").exists()  # its parent, made empty, too
    assert (tmp_path / "outputs" / "kept" / "12-00-00" / "model_0000002.pt").is_file()
    assert (tmp_path / "outputs" / "odd" / "12-00-00" / ".hydra" / "mine.txt").is_file()
    assert (tmp_path / "keep_me").is_dir()
