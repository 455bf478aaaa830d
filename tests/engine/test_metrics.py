"""MetricsLogger: per-class APs get their own TensorBoard group; metrics.jsonl keeps every name."""

import json

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from maskrcnn.engine import MetricsLogger
from maskrcnn.engine.metrics import tensorboard_tag

EVALUATION = {
    "bbox/AP": 0.41,
    "bbox/AP50": 0.62,
    "bbox/APs": 0.2,
    "segm/AP": 0.37,
    "bbox/AP-person": 0.5,
    "bbox/AP-hair drier": 0.1,
    "segm/AP-person": 0.45,
    "voc/mAP50_07": 0.7,
    "voc/mAP50": 0.72,
    "voc/AP50_07-RBC": 0.8,
    "voc/AP50-RBC": 0.81,
    "time/iter": 0.5,
    "rpn/num_fg": 12.0,
}


def test_per_class_aps_have_their_own_tensorboard_group(tmp_path):
    metrics = MetricsLogger(directory=tmp_path)
    metrics.log(10, EVALUATION)
    metrics.close()
    tags = set(EventAccumulator(str(tmp_path / "tensorboard")).Reload().Tags()["scalars"])
    assert tags == {
        "bbox/AP",
        "bbox/AP50",
        "bbox/APs",
        "segm/AP",
        "voc/mAP50_07",
        "voc/mAP50",
        "time/iter",
        "rpn/num_fg",
        "bbox_per_class/AP-person",
        "bbox_per_class/AP-hair drier",
        "segm_per_class/AP-person",
        "voc_per_class/AP50_07-RBC",
        "voc_per_class/AP50-RBC",
    }
    (line,) = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert json.loads(line) == {"iteration": 10, **EVALUATION}  # the file keeps the evaluators' names


def test_tensorboard_tag_keeps_summary_names():
    for name in ("loss", "loss_mask", "lr", "bbox/AP", "bbox/APl", "segm/AP75", "voc/mAP50", "time/data"):
        assert tensorboard_tag(name) == name
