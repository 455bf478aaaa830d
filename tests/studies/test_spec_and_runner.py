"""Study specs and the resumable runner, with a stand-in training script (the real tools/train.py
runs in test_run_study_cli.py): run order, shared runs, skip / resume / retry, locks, CPU time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from maskrcnn.studies import load_study, plan_runs, run_study
from maskrcnn.studies.runner import read_run_info, run_state, try_lock, unlock
from maskrcnn.studies.spec import available_studies

# Writes what tools/train.py writes (.hydra/config.yaml, checkpoints, metrics.json at the end).
# `crash_unless_resumed=1` exits 1 after a checkpoint unless the run was resumed.
FAKE_TRAIN = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    args = dict(a.split("=", 1) for a in sys.argv[1:])
    run = Path(args["hydra.run.dir"]); (run / ".hydra").mkdir(parents=True, exist_ok=True)
    (run / ".hydra" / "config.yaml").write_text(
        f"seed: {args['seed']}\\nsolver: {{max_iter: 4}}\\nroi_layer: {{name: {args.get('roi', 'x')}, op: roi_align}}\\n")
    with open(run / "calls.txt", "a") as f:
        f.write(" ".join(sys.argv[1:]) + "\\n")
    (run / "model_0000002.pt").write_bytes(b"ckpt")
    (run / "info_while_running.json").write_text((run / "run_info.json").read_text())
    if args.get("crash_unless_resumed") == "1" and args.get("resume") != "true":
        sys.exit(1)
    sum(i * i for i in range(200000))  # some CPU time
    (run / "metrics.json").write_text(json.dumps({"iteration": 4, "bbox/AP": float(args.get("ap", 0.5))}))
""")


def write_spec(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(textwrap.dedent(body))
    return path


@pytest.fixture()
def fake_train(tmp_path):
    script = tmp_path / "fake_train.py"
    script.write_text(FAKE_TRAIN)
    return script


def test_the_repository_studies_load_and_plan(tmp_path):
    assert {"c4_roi_layers", "c4_sampling", "fpn_roi_layers", "bccd_roi_layers"} <= set(available_studies())
    for name in available_studies():
        spec = load_study(name)
        runs = plan_runs(spec, tmp_path)
        assert len(runs) == len(spec.seeds) * len(spec.variants)
    # Study 4's adaptive runs are Study 1's roi_align runs (same overrides), not new ones
    sampling = {(r.variant, r.seed): r for r in plan_runs(load_study("c4_sampling"), tmp_path)}
    assert sampling["adaptive", 1].directory == tmp_path / "c4_roi_layers" / "roi_align" / "seed1"
    assert sampling["sampling_2", 0].directory == tmp_path / "c4_sampling" / "sampling_2" / "seed0"


def test_plan_is_seed_major_with_the_run_overrides(tmp_path):
    spec = load_study(
        write_spec(
            tmp_path / "s",
            "a",
            """
        title: A
        overrides: [experiment=x]
        seeds: [3, 5]
        baseline: p
        variants: {p: [roi=p], q: [roi=q, ap=0.7]}
    """,
        )
    )
    runs = plan_runs(spec, tmp_path / "out")
    assert [(r.variant, r.seed) for r in runs] == [("p", 3), ("q", 3), ("p", 5), ("q", 5)]
    assert runs[3].overrides == ("experiment=x", "roi=q", "ap=0.7", "seed=5")
    assert runs[3].directory == tmp_path / "out" / "a" / "q" / "seed5"


@pytest.mark.parametrize(
    "body, message",
    [
        ("title: A\nseeds: [0]\nbaseline: p\nvariants: {p: []}\nlayers: 1\n", "unknown keys ['layers']"),
        ("title: A\nseeds: [0]\nbaseline: z\nvariants: {p: []}\n", "baseline 'z' is not one of the variants"),
        ("title: A\nseeds: [0, 0]\nbaseline: p\nvariants: {p: []}\n", "seeds [0, 0] repeat"),
        ("title: A\nseeds: [0]\nbaseline: p\nvariants: {p: [seed=3]}\n", "seeds and run folders are the runner's"),
        ("title: A\nseeds: [0]\nvariants: {p: []}\n", "missing key 'baseline'"),
    ],
)
def test_spec_errors_name_the_problem(tmp_path, body, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_study(write_spec(tmp_path, "bad", body))


def test_unknown_study_lists_the_available_ones():
    with pytest.raises(ValueError, match="available: .*c4_roi_layers"):
        load_study("c4_roi_layer")


def test_shared_variant_must_have_the_same_overrides(tmp_path):
    write_spec(tmp_path, "one", "title: 1\noverrides: [e=1]\nseeds: [0]\nbaseline: p\nvariants: {p: [roi=p]}\n")
    same = load_study(
        write_spec(
            tmp_path,
            "two",
            """
        title: 2
        overrides: [e=1]
        seeds: [0]
        baseline: p
        variants: {p: [roi=p], r: [roi=r]}
        shared: {p: one/p}
    """,
        )
    )
    assert plan_runs(same, tmp_path / "out")[0].directory == tmp_path / "out" / "one" / "p" / "seed0"
    differs = load_study(
        write_spec(
            tmp_path,
            "three",
            """
        title: 3
        overrides: [e=2]
        seeds: [0]
        baseline: p
        variants: {p: [roi=p]}
        shared: {p: one/p}
    """,
        )
    )
    with pytest.raises(ValueError, match="overrides differ"):
        plan_runs(differs, tmp_path / "out")


def test_runner_skips_finished_resumes_and_retries_failed_runs(tmp_path, fake_train):
    spec = load_study(
        write_spec(
            tmp_path,
            "s",
            """
        title: S
        seeds: [0]
        baseline: good
        variants: {good: [roi=good, ap=0.4], bad: [roi=bad, crash_unless_resumed=1]}
    """,
        )
    )
    root = tmp_path / "out"
    states = run_study([spec], root=root, workers=2, train_script=fake_train)
    good, bad = root / "s" / "good" / "seed0", root / "s" / "bad" / "seed0"
    assert states == {good: "finished", bad: "failed"}
    info = read_run_info(bad)
    assert info["attempts"][-1]["returncode"] == 1 and info["seed"] == 0 and info["variant"] == "bad"
    assert read_run_info(good)["cpu_s"] >= 0 and read_run_info(good)["attempts"][0]["threads"] == 1

    states = run_study([spec], root=root, workers=1, train_script=fake_train)
    assert states == {good: "finished", bad: "finished"}
    assert len((good / "calls.txt").read_text().splitlines()) == 1  # not run again
    calls = (bad / "calls.txt").read_text().splitlines()
    assert len(calls) == 2 and "resume=true" not in calls[0] and calls[1].endswith("resume=true")
    assert [a["returncode"] for a in read_run_info(bad)["attempts"]] == [1, 0]
    assert all("cpu_s" in a for a in read_run_info(bad)["attempts"])  # no attempt cut off
    assert not list(root.rglob(".study.lock"))
    # The attempt is on record while it runs (no return code, no times yet): a runner stopped
    # mid-attempt leaves it there, and the run's cost is then known to be incomplete.
    during = json.loads((bad / "info_while_running.json").read_text())["attempts"]
    assert len(during) == 2 and during[-1]["resumed"] and "returncode" not in during[-1] and "cpu_s" not in during[-1]


def test_unfinished_run_resumes_from_its_checkpoint(tmp_path, fake_train):
    spec = load_study(write_spec(tmp_path, "s", "title: S\nseeds: [1]\nbaseline: p\nvariants: {p: [roi=p]}\n"))
    run = tmp_path / "out" / "s" / "p" / "seed1"
    run.mkdir(parents=True)
    (run / "model_0000002.pt").write_bytes(b"ckpt")  # as a run killed after its first checkpoint leaves it
    assert run_state(run) == "unfinished"
    run_study([spec], root=tmp_path / "out", train_script=fake_train)
    assert (run / "calls.txt").read_text().strip().endswith("resume=true")
    assert run_state(run) == "finished"


def test_a_live_lock_keeps_a_run_from_a_second_runner_and_a_stale_one_is_taken(tmp_path, fake_train):
    spec = load_study(write_spec(tmp_path, "s", "title: S\nseeds: [0]\nbaseline: p\nvariants: {p: [roi=p]}\n"))
    run = tmp_path / "out" / "s" / "p" / "seed0"
    assert try_lock(run) and not try_lock(run)  # held by this (live) process
    run_study([spec], root=tmp_path / "out", train_script=fake_train)
    assert not (run / "calls.txt").exists()
    unlock(run)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run / ".study.lock").write_text(f"{os.uname().nodename} {dead.pid}\n")
    run_study([spec], root=tmp_path / "out", train_script=fake_train)
    assert run_state(run) == "finished"
    assert json.loads((run / "metrics.json").read_text())["bbox/AP"] == 0.5
