"""What every tool does around its work: set up the process, seed, run the work so that a user's
mistake is one line, and rebuild a model from a checkpoint (with the config its run saved).

The tools in ``tools/`` are thin Hydra entry points over :mod:`maskrcnn.engine.training`,
:mod:`maskrcnn.engine.evaluate`, :mod:`maskrcnn.engine.predict` and these helpers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from ..data import build_test_loader
from ..distributed import broadcast_object, init_distributed, is_main_process, launched_by_torchrun
from ..elastic import run_stamp
from ..evaluation import build_evaluator
from .checkpoint import Checkpointer
from .inference import inference_on_dataset
from .run_config import RunConfig, apply_run_config, load_model_weights, load_run_config, without_initial_weights
from .run_dir import remove_empty_run_dir
from .user_errors import exit_on_user_error

logger = logging.getLogger(__name__)


def setup_process(*, device: str, deterministic: bool = False) -> torch.device:
    """Process group (under torchrun), logging of non-main ranks, determinism. Returns the device."""
    resolved = init_distributed(device)
    if not is_main_process():
        # One log for the run: the other ranks only report warnings, to the console.
        root = logging.getLogger()
        for handler in list(root.handlers):
            if isinstance(handler, logging.FileHandler):
                root.removeHandler(handler)
        root.setLevel(logging.WARNING)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    return resolved


def seed_all(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def share_run_stamp(argv: Sequence[str]) -> None:
    """Under torchrun, make all ranks use rank 0's run directory name (MASKRCNN_RUN_STAMP): when
    the torchrun agent started, so that workers it restarts (--max-restarts) find the same one.
    ``argv`` is the command line (its ``device=`` picks the process group's backend)."""
    if not launched_by_torchrun() or "MASKRCNN_RUN_STAMP" in os.environ:
        return
    device = next((a.split("=", 1)[1] for a in argv if a.startswith("device=")), "auto")
    init_distributed(device)
    os.environ["MASKRCNN_RUN_STAMP"] = broadcast_object(run_stamp())


@contextlib.contextmanager
def tool_run(output_dir: str | Path, *, log_name: str):
    """Run a tool's work: a user's mistake prints one ``error: ...`` line (exit status 1, see
    :mod:`maskrcnn.engine.user_errors`), and a run that fails leaves no empty run folder behind."""
    with exit_on_user_error():
        try:
            yield
        except BaseException:
            if is_main_process():
                remove_empty_run_dir(output_dir, log_name=log_name)
            raise


def load_checkpoint_config(
    cfg: DictConfig, overrides: Sequence[str], *, dataset_from_meta: bool
) -> tuple[DictConfig, dict, RunConfig]:
    """Load ``cfg.checkpoint`` and put its run's config under the command line's ``overrides``
    (see :func:`maskrcnn.engine.run_config.apply_run_config`). Returns (config, checkpoint state, run)."""
    state = Checkpointer.load(cfg.checkpoint)
    run = load_run_config(cfg.checkpoint, state)
    cfg = apply_run_config(cfg, run, overrides, checkpoint=cfg.checkpoint, dataset_from_meta=dataset_from_meta)
    return cfg, state, run


def build_model_from_checkpoint(cfg: DictConfig, state: dict, *, meta: dict, device: torch.device) -> torch.nn.Module:
    """``cfg.model`` with the weights of ``state`` (the checkpoint ``cfg.checkpoint``), on
    ``device``, in eval mode. ``model.init`` / ``model.backbone.weights`` are not read: the
    checkpoint replaces them. A checkpoint that does not fit stops with one line (wrong model or
    class count)."""
    model = instantiate(without_initial_weights(cfg).model)
    load_model_weights(model, state, checkpoint=cfg.checkpoint, meta=meta)
    return model.to(device).eval()


def evaluate_dataset(
    model: torch.nn.Module,
    dataset,
    *,
    evaluator: str,
    batch_size: int,
    num_workers: int,
    device: torch.device,
    amp: str = "none",
    class_agnostic: bool = False,
) -> dict:
    """COCO or VOC metrics (``evaluator``: ``dataset.evaluator``) of ``model`` on ``dataset``, its
    images sharded across ranks; the per-category table goes to the log. Every rank gets the metrics.
    ``class_agnostic`` (COCO only) adds the class-agnostic numbers ``bbox/agnostic_AP`` ..."""
    scorer = build_evaluator(dataset, evaluator, class_agnostic=class_agnostic)
    loader = build_test_loader(dataset, batch_size=batch_size, num_workers=num_workers)
    results = inference_on_dataset(model, loader, scorer, device=device, amp=amp)
    if is_main_process() and hasattr(scorer, "per_category_table"):
        logger.info("per-category AP:\n%s", scorer.per_category_table())
    return broadcast_object(results)


def overall_metrics(results: dict) -> dict:
    """The overall metrics of ``results`` (not the per-class ``.../AP-<class>`` ones), rounded for the log."""
    return {k: round(v, 4) for k, v in results.items() if "-" not in k}
