#!/usr/bin/env python
"""A CPU training step in three forms, interleaved in one process: as trained today
(``contiguous``), with the model in the channels_last memory format (``channels_last``), and with
``torch.compile`` of the backbone (``compile_backbone``), with ratios to the first.

    OMP_NUM_THREADS=1 python tools/bench_step.py experiment=table2_c4 model.backbone.weights=null
    python tools/bench_step.py --forms contiguous,channels_last --rounds 3 experiment=table2_fpn

Trailing arguments are Hydra overrides of configs/train.yaml. Every form starts from the same
weights and steps through the same --batches batches (forward with targets, backward, SGD step);
each round runs every form once over the batches, after --warmup untimed batches per form (where
torch.compile compiles; its compile time is printed apart). Reports the process CPU time per step
(all threads, so use OMP_NUM_THREADS=1 on a shared machine) and the wall time, median over rounds,
and the largest difference of the first batch's losses from the contiguous model's.
See docs/profile.md ("Memory format and torch.compile").
"""

from __future__ import annotations

import argparse
import copy
import itertools
import statistics
import sys
import time

import torch

from maskrcnn.engine.user_errors import exit_on_user_error
from maskrcnn.profiling import build_training_run

FORMS = ("contiguous", "channels_last", "compile_backbone")


def make_form(model: torch.nn.Module, form: str) -> torch.nn.Module:
    model = copy.deepcopy(model)
    if form == "channels_last":
        model = model.to(memory_format=torch.channels_last)
    elif form == "compile_backbone":
        model.backbone = torch.compile(model.backbone, dynamic=True)
    return model


def step(model, optimizer, batch) -> dict[str, float]:
    images, targets = batch
    torch.manual_seed(0)  # the same RPN / RoI sampling draws for every form
    losses = model(list(images), list(targets))
    optimizer.zero_grad(set_to_none=True)
    sum(losses.values()).backward()
    optimizer.step()
    return {k: float(v.detach()) for k, v in losses.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", default=["experiment=demo"], help="Hydra overrides")
    parser.add_argument("--forms", default=",".join(FORMS), help=f"comma-separated, from {FORMS}")
    parser.add_argument("--batches", type=int, default=9, help="timed batches per round")
    parser.add_argument("--warmup", type=int, default=3, help="untimed batches per form first")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    forms = args.forms.split(",")
    if not forms or any(f not in FORMS for f in forms) or forms[0] != "contiguous":
        parser.error(f"--forms must start with contiguous and name forms of {FORMS}")
    # One process, no loader workers: every form steps through the same batches, built once.
    with exit_on_user_error():  # a misspelled override or a missing dataset: one line, no traceback
        _, _, base, _, loader = build_training_run([*args.overrides, "trainer.num_workers=0"], device="cpu")
        batches = list(itertools.islice(iter(loader), args.warmup + args.batches))
    base.train()
    models = {f: make_form(base, f) for f in forms}
    optimizers = {f: torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9) for f, m in models.items()}
    first = {}
    for form, model in models.items():
        start = time.perf_counter()
        first[form] = step(model, optimizers[form], batches[0])
        for batch in batches[1 : args.warmup]:
            step(model, optimizers[form], batch)
        print(f"{form}: warmup of {args.warmup} batches {time.perf_counter() - start:.1f} s wall", flush=True)
    cpu = {f: [] for f in forms}
    wall = {f: [] for f in forms}
    for _ in range(args.rounds):
        for form, model in models.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            for batch in batches[args.warmup :]:
                step(model, optimizers[form], batch)
            wall[form].append((time.perf_counter() - start) / args.batches)
            cpu[form].append((time.process_time() - start_cpu) / args.batches)
    print(
        f"{' '.join(args.overrides)}: {torch.get_num_threads()} threads, {args.batches} batches x {args.rounds} rounds"
    )
    print(f"{'form':<18} {'CPU s/step':>10} {'ratio':>7} {'wall s/step':>11} {'ratio':>7} {'max loss diff':>13}")
    ref_cpu, ref_wall = statistics.median(cpu[forms[0]]), statistics.median(wall[forms[0]])
    for form in forms:
        c, w = statistics.median(cpu[form]), statistics.median(wall[form])
        diff = max(abs(first[form][k] - first[forms[0]][k]) for k in first[form])
        print(f"{form:<18} {c:>10.3f} {c / ref_cpu:>7.2f} {w:>11.3f} {w / ref_wall:>7.2f} {diff:>13.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
