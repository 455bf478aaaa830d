"""Where a training step's time goes: wall-clock timers (and ``torch.profiler`` ranges) around the
parts of one step of the two-stage detector, without changing the model's code.

The parts (``docs/profile.md``): data (next batch and the copy to the device), the image transform,
the backbone (ResNet + FPN), the RPN (head, anchors, proposal selection with NMS, matching and
losses), RoI sampling, the box branch (pooling, head, losses), the mask branch (pooling, head,
targets, loss), backward and the optimizer. A part's time includes the parts nested in it; the
``(rest)`` rows are the time of a part outside its listed children.

    from maskrcnn.profiling import profile_training_steps
    report = profile_training_steps(model, optimizer, batches, device=device, steps=20)
    print(format_report(report))

:func:`time_interleaved` is the timer of the benchmarks (``tools/bench_ops.py``, ``tools/bench_model.py``).
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterator

import torch
from torch.profiler import record_function

__all__ = ["StepTimer", "instrument", "profile_training_steps", "format_report", "time_interleaved"]

# (name, parent): the report's rows in order. Parents come before their children.
PARTS: list[tuple[str, str | None]] = [
    ("step", None),
    ("data", "step"),
    ("forward", "step"),
    ("transform", "forward"),
    ("backbone", "forward"),
    ("rpn", "forward"),
    ("rpn.head", "rpn"),
    ("rpn.anchors", "rpn"),
    ("rpn.proposals (top-k, NMS)", "rpn"),
    ("rpn.matching + losses", "rpn"),
    ("roi_heads", "forward"),
    ("roi.sampling (matching)", "roi_heads"),
    ("box.pooler", "roi_heads"),
    ("box.head", "roi_heads"),
    ("box.losses", "roi_heads"),
    ("mask.pooler", "roi_heads"),
    ("mask.head", "roi_heads"),
    ("mask.targets", "roi_heads"),
    ("mask.loss", "roi_heads"),
    ("backward", "step"),
    ("optimizer", "step"),
]


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


class StepTimer:
    """Accumulates the time per named part within a step; ``end_step`` closes the step.

    ``clock="wall"`` measures elapsed time; ``clock="cpu"`` the CPU time of this process (all its
    threads; not the DataLoader workers'), which on a machine shared with other jobs stays
    what the work costs while wall time grows with the load (use it with one thread:
    OMP_NUM_THREADS=1, since idle OpenMP threads spin and count too).

    On CUDA each range synchronises the device at its ends so that the time belongs to the part
    that launched the work (this slows the step a little; CPU times are unaffected).
    """

    def __init__(self, device: torch.device, clock: str = "wall") -> None:
        if clock not in CLOCKS:
            raise ValueError(f"clock must be one of {sorted(CLOCKS)}, got {clock!r}")
        self.now = CLOCKS[clock]
        self.sync = device.type == "cuda"
        self.current: dict[str, float] = defaultdict(float)
        self.steps: list[dict[str, float]] = []

    @contextlib.contextmanager
    def part(self, name: str) -> Iterator[None]:
        if self.sync:
            torch.cuda.synchronize()
        start = self.now()
        with record_function(name):
            yield
        if self.sync:
            torch.cuda.synchronize()
        self.current[name] += self.now() - start

    def wrap(self, name: str, fn: Callable) -> Callable:
        def timed(*args, **kwargs):
            with self.part(name):
                return fn(*args, **kwargs)

        return timed

    def end_step(self) -> None:
        self.steps.append(dict(self.current))
        self.current = defaultdict(float)


@contextlib.contextmanager
def instrument(model: torch.nn.Module, timer: StepTimer) -> Iterator[None]:
    """Times the parts of a :class:`~maskrcnn.modeling.GeneralizedRCNN` (FPN or C4) while active.

    Instance attributes shadow the methods (``forward`` of submodules, the RPN's and RoI heads'
    private steps) and the RoI heads' module-level mask functions are patched; all is restored
    on exit.
    """
    from maskrcnn.modeling import roi_heads as roi_heads_module
    from maskrcnn.modeling.roi_heads import Res5RoIHeads

    rpn, heads = model.rpn, model.roi_heads
    targets: list[tuple[object, str, str]] = [
        (model.transform, "forward", "transform"),
        (model.backbone, "forward", "backbone"),
        (rpn, "forward", "rpn"),
        (rpn.head, "forward", "rpn.head"),
        (rpn.anchor_generator, "forward", "rpn.anchors"),
        (rpn, "_select_proposals", "rpn.proposals (top-k, NMS)"),
        (rpn, "_losses", "rpn.matching + losses"),
        (heads, "forward", "roi_heads"),
        (heads, "_sample", "roi.sampling (matching)"),
        (heads.box_pooler, "forward", "box.pooler"),
        # The C4 heads (Res5RoIHeads) run the res5 box head through its trunk(), not forward().
        (heads.box_head, "trunk" if isinstance(heads, Res5RoIHeads) else "forward", "box.head"),
        (heads.box_predictor, "forward", "box.head"),
        (heads, "_box_losses", "box.losses"),
    ]
    if getattr(heads, "mask_pooler", None) is not None:  # StandardRoIHeads only
        targets.append((heads.mask_pooler, "forward", "mask.pooler"))
    for m in (getattr(heads, "mask_head", None), heads.mask_predictor):
        if m is not None:
            targets.append((m, "forward", "mask.head"))
    patched = []
    try:
        for obj, attr, name in targets:
            patched.append((obj, attr, attr in vars(obj)))
            setattr(obj, attr, timer.wrap(name, getattr(obj, attr)))
        for attr, name in (("mask_targets", "mask.targets"), ("mask_loss", "mask.loss")):
            original = getattr(roi_heads_module, attr)
            patched.append((roi_heads_module, attr, original))
            setattr(roi_heads_module, attr, timer.wrap(name, original))
        yield
    finally:
        for obj, attr, saved in reversed(patched):
            if obj is roi_heads_module:
                setattr(obj, attr, saved)
            elif not saved:
                delattr(obj, attr)


def _to_device(images, targets, device):
    images = [img.to(device, non_blocking=True) for img in images]
    targets = [
        {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in t.items()}
        for t in targets
    ]
    return images, targets


def profile_training_steps(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterator,
    *,
    device: torch.device,
    steps: int = 20,
    warmup: int = 5,
    clock: str = "wall",
    profiler: torch.profiler.profile | None = None,
) -> dict:
    """Runs ``warmup`` untimed and ``steps`` timed training steps (forward, backward, optimizer
    step, as the trainer does them) on ``batches`` (an iterator of ``(images, targets)``).

    With ``profiler`` (a ``torch.profiler.profile``, not started), the timed steps are recorded by
    it too (started after the warmup, stopped at the end), with a ``record_function`` range per part.

    Returns:
        ``{"steps": [{part: seconds}, ...], "median_ms": {part: ms}, "losses": {name: last value}}``.
    """
    timer = StepTimer(device, clock)
    model.train()
    last = {}
    with instrument(model, timer):
        for i in range(warmup + steps):
            if i == warmup and profiler is not None:
                profiler.start()
            with timer.part("step"):
                with timer.part("data"):
                    images, targets = _to_device(*next(batches), device)
                with timer.part("forward"):
                    losses = model(images, targets)
                total = sum(losses.values())
                with timer.part("backward"):
                    optimizer.zero_grad(set_to_none=True)
                    total.backward()
                with timer.part("optimizer"):
                    optimizer.step()
            last = {k: float(v.detach()) for k, v in losses.items()}
            if i < warmup:
                timer.current.clear()
                continue
            timer.end_step()
    if profiler is not None:
        profiler.stop()
    names = [n for n, _ in PARTS]
    median_ms = {n: 1e3 * statistics.median(s.get(n, 0.0) for s in timer.steps) for n in names}
    return {"steps": timer.steps, "median_ms": median_ms, "losses": last}


def format_report(report: dict) -> str:
    """The parts as an indented table: median ms per step, % of the step, and ``(rest)`` rows."""
    ms = report["median_ms"]
    step = ms["step"] or float("nan")
    children = defaultdict(list)
    for name, parent in PARTS:
        if parent is not None:
            children[parent].append(name)
    depth = {}
    lines = [f"{'part':<34} {'ms/step':>9} {'% step':>7}"]

    def row(name: str, value: float, level: int) -> None:
        lines.append(f"{'  ' * level + name:<34} {value:>9.1f} {100 * value / step:>6.1f}%")

    def walk(name: str, level: int) -> None:
        depth[name] = level
        row(name, ms[name], level)
        kids = [k for k in children[name] if ms.get(k, 0.0) > 0]
        for k in kids:
            walk(k, level + 1)
        if kids:
            # Children run inside their parent; a median of sums is not a sum of medians, so the
            # rest is taken per step.
            rest = statistics.median(s.get(name, 0.0) - sum(s.get(k, 0.0) for k in kids) for s in report["steps"])
            row("(rest)", 1e3 * rest, level + 1)

    walk("step", 0)
    return "\n".join(lines)


def build_training_run(overrides: list[str], *, device: str | None = None):
    """The training run of ``configs/train.yaml`` with Hydra ``overrides``, built as
    ``tools/train.py`` builds it and seeded by ``seed``: ``(cfg, device, model, optimizer, loader)``.
    The model is on ``device`` (default: the config's) and the loader is the infinite training
    loader. Shared by :func:`profile_config` and ``tools/bench_step.py``."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from maskrcnn.data import build_train_loader
    from maskrcnn.distributed import resolve_device
    from maskrcnn.engine import validate_train_config
    from maskrcnn.engine.config import REPO_ROOT
    from maskrcnn.engine.launch import seed_all
    from maskrcnn.engine.solver import optimizer_from_config

    with initialize_config_dir(config_dir=str(REPO_ROOT / "configs"), version_base="1.3"):
        cfg = validate_train_config(compose(config_name="train", overrides=list(overrides)))
    dev = resolve_device(device or cfg.device)
    seed_all(cfg.seed)
    train_set = instantiate(cfg.dataset.train)
    model = instantiate(cfg.model).to(dev)
    optimizer = optimizer_from_config(model, cfg.solver)
    loader = build_train_loader(
        train_set,
        batch_size=cfg.solver.ims_per_batch,
        num_workers=cfg.trainer.num_workers,
        seed=cfg.seed,
        aspect_ratio_grouping=cfg.trainer.aspect_ratio_grouping,
    )
    return cfg, dev, model, optimizer, loader


def profile_config(
    overrides: list[str],
    *,
    steps: int = 20,
    warmup: int = 5,
    ops: int = 0,
    device: str | None = None,
    clock: str = "wall",
) -> dict:
    """Builds the training run of ``configs/train.yaml`` with Hydra ``overrides``
    (:func:`build_training_run`) and profiles its steps.

    ``ops > 0`` also records the timed steps with ``torch.profiler`` and adds the ``ops`` most
    expensive operators by self CPU time (forward and backward) as ``report["ops_table"]``.
    """
    cfg, dev, model, optimizer, loader = build_training_run(overrides, device=device)
    s = cfg.solver
    batches = iter(loader)
    context = {
        "overrides": list(overrides),
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "ims_per_batch": s.ims_per_batch,
        "num_workers": cfg.trainer.num_workers,
        "steps": steps,
        "warmup": warmup,
        "clock": clock,
    }
    if ops <= 0:
        report = profile_training_steps(model, optimizer, batches, device=dev, steps=steps, warmup=warmup, clock=clock)
    else:
        activities = [torch.profiler.ProfilerActivity.CPU]
        if dev.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        prof = torch.profiler.profile(activities=activities)
        report = profile_training_steps(
            model, optimizer, batches, device=dev, steps=steps, warmup=warmup, clock=clock, profiler=prof
        )
        sort_by = "self_cuda_time_total" if dev.type == "cuda" else "self_cpu_time_total"
        report["ops_table"] = prof.key_averages().table(sort_by=sort_by, row_limit=ops)
    report["context"] = context
    return report


def time_interleaved(
    fns: dict[str, Callable[[], object]], *, repeats: int, warmup: int, device: torch.device
) -> dict[str, tuple[list[float], list[float]]]:
    """Wall-clock and process CPU milliseconds (all threads) of ``repeats`` calls of each of ``fns``
    after ``warmup`` untimed ones: ``{name: (wall_ms, cpu_ms)}``, one entry per call.

    The calls are interleaved (one of each fn per round), so that a change of load on a shared
    machine hits every fn alike; the CPU time shows the work done even when other processes
    inflate the wall clock. On CUDA each call is timed to the device's completion.
    """

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        for fn in fns.values():
            fn()
    sync()
    times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            sync()
            times[name][0].append((time.perf_counter() - start) * 1e3)
            times[name][1].append((time.process_time() - start_cpu) * 1e3)
    return times
