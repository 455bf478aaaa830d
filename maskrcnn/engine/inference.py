"""Running a detector over a test loader into an evaluator; drawing predictions of a few images."""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from ..distributed import get_world_size, is_main_process
from .choices import Amp, check_choice
from .metrics import format_eta
from .visualize import draw_predictions

logger = logging.getLogger(__name__)

# The autocast dtype of each Amp mode but none.
_AUTOCAST_DTYPES = {Amp.bf16: torch.bfloat16, Amp.fp16: torch.float16}


def autocast(device: torch.device, amp: str):
    """``torch.autocast`` for an :class:`~maskrcnn.engine.choices.Amp` name; a no-op context for ``none``."""
    dtype = _AUTOCAST_DTYPES.get(Amp[check_choice(amp, Amp, "amp")])
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _to_cpu(output: dict) -> dict:
    # Evaluators work on CPU, in float32 (masks included: the evaluators threshold them at 0.5).
    out = {}
    for k, v in output.items():
        if isinstance(v, torch.Tensor):
            v = v.detach().to("cpu")
            if v.is_floating_point():
                v = v.float()
        out[k] = v
    return out


@torch.no_grad()
def inference_on_dataset(
    model, loader, evaluator, *, device: torch.device, amp: str = "none", log_period: int = 50
) -> dict[str, float]:
    """Predict every image of ``loader`` (sharded by rank) and return ``evaluator.evaluate()``.

    The model is put in eval mode and restored to its previous mode afterwards. Outputs are moved
    to CPU (float32) before ``evaluator.process(targets, outputs)``.
    """
    was_training = model.training
    model.eval()
    evaluator.reset()
    total = len(loader)
    start = time.perf_counter()
    try:
        for index, (images, targets) in enumerate(loader):
            images = [img.to(device, non_blocking=True) for img in images]
            with autocast(device, amp):
                outputs = model(images)
            evaluator.process(list(targets), [_to_cpu(o) for o in outputs])
            done = index + 1
            if is_main_process() and (done % log_period == 0 or done == total):
                per_batch = (time.perf_counter() - start) / done
                logger.info(
                    f"inference {done}/{total} batches (x{get_world_size()} ranks)  "
                    f"{per_batch:.3f}s/batch  eta {format_eta(per_batch * (total - done))}"
                )
    finally:
        model.train(was_training)
    return evaluator.evaluate()


@torch.no_grad()
def draw_dataset_predictions(
    model,
    dataset,
    *,
    indices,
    device: torch.device,
    out_dir: str | Path | None,
    score_threshold: float = 0.5,
    amp: str = "none",
) -> list[tuple[str, np.ndarray]]:
    """Predictions of ``model`` drawn on ``dataset[i]`` for i in ``indices``.

    Returns ``[(tag, HWC uint8 RGB image), ...]`` and, when ``out_dir`` is given, writes
    ``out_dir/<tag>.png``.
    """
    was_training = model.training
    model.eval()
    drawn = []
    try:
        for i in indices:
            image, target = dataset[i]
            with autocast(device, amp):
                (output,) = model([image.to(device)])
            canvas = draw_predictions(
                image,
                _to_cpu(output),
                class_names=getattr(dataset, "class_names", None),
                score_threshold=score_threshold,
            )
            tag = f"image_{target.get('image_id', i)}"
            drawn.append((tag, canvas))
            if out_dir is not None:
                Path(out_dir).mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(Path(out_dir) / f"{tag}.png"), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    finally:
        model.train(was_training)
    return drawn
