#!/usr/bin/env python
"""Where the time of a training step goes, part by part (docs/profile.md).

    python tools/profile_step.py                                   # the demo: experiment=demo
    python tools/profile_step.py --steps 30 --ops 25 experiment=demo trainer.num_workers=0
    python tools/profile_step.py model=mask_rcnn_r50_fpn dataset=coco --json profile.json

Trailing arguments are Hydra overrides of configs/train.yaml (default: experiment=demo). Prints the
median milliseconds per step of each part (data, transform, backbone, RPN, RoI sampling, box and
mask branches, backward, optimizer) over --steps timed steps after --warmup untimed ones, and with
--ops N the N most expensive operators of torch.profiler (self CPU time, forward and backward).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from maskrcnn.engine.user_errors import exit_on_user_error
from maskrcnn.profiling import format_report, profile_config


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", default=["experiment=demo"], help="Hydra overrides")
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first")
    parser.add_argument("--ops", type=int, default=0, help="also list the N most expensive operators")
    parser.add_argument("--device", default=None, help="cpu | cuda (default: the config's device)")
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="wall: elapsed time; cpu: this process's CPU time (steady on a loaded machine; "
        "use with OMP_NUM_THREADS=1)",
    )
    parser.add_argument("--json", default=None, help="write the per-step times and medians here")
    args = parser.parse_args(argv)
    if args.steps <= 0 or args.warmup < 0:
        parser.error("--steps must be > 0 and --warmup >= 0")

    with exit_on_user_error():  # a misspelled override or a missing dataset: one line, no traceback
        report = profile_config(
            args.overrides, steps=args.steps, warmup=args.warmup, ops=args.ops, device=args.device, clock=args.clock
        )
    c = report["context"]
    print(
        f"training step of {' '.join(c['overrides'])}: {c['ims_per_batch']} images per step, "
        f"{c['num_workers']} loader workers, {c['device']}, {c['threads']} threads; {c['clock']} time, "
        f"median of {c['steps']} steps after {c['warmup']}"
    )
    print(format_report(report))
    if "ops_table" in report:
        print(report["ops_table"])
    if args.json:
        Path(args.json).write_text(json.dumps({k: v for k, v in report.items() if k != "ops_table"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
