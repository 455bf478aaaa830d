"""The command line on bad input: one line naming the culprit and the fix, no traceback."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _tool(tmp_path, tool, *args):
    run = subprocess.run(
        [sys.executable, str(REPO / "tools" / tool), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"},
    )
    return run.returncode, run.stdout + run.stderr


def _train(tmp_path, *overrides):
    return _tool(tmp_path, "train.py", "experiment=demo", f"hydra.run.dir={tmp_path / 'run'}", *overrides)


@pytest.mark.parametrize(
    "override, expected",
    [
        (
            "roi_layer=roi_algn",
            ["Could not find 'roi_layer/roi_algn'", "Available options in 'roi_layer'", "roi_align"],
        ),
        ("solver.base_lrr=0.1", ["Could not override 'solver.base_lrr'", "Key 'base_lrr' is not in struct"]),
    ],
)
def test_hydra_rejects_unknown_options_and_keys_without_a_traceback(tmp_path, override, expected):
    code, output = _train(tmp_path, override)
    assert code == 1
    for text in expected:
        assert text in output, output
    assert "Traceback" not in output, output


@pytest.mark.parametrize(
    "override, expected",
    [
        ("solver.base_lr=-1", "error: invalid config value solver.base_lr: must be > 0, got -1.0"),
        ("paths.data_root=/nowhere", "error: COCO annotation file not found: /nowhere/"),
    ],
)
def test_our_checks_print_one_error_line(tmp_path, override, expected):
    code, output = _train(tmp_path, override)
    assert code == 1
    (line,) = [line for line in output.splitlines() if line.startswith("error: ")]
    assert line.startswith(expected), output
    assert "Traceback" not in output and "HYDRA_FULL_ERROR" not in output, output


def test_eval_on_a_truncated_checkpoint_prints_one_error_line(tmp_path):
    (tmp_path / "model_final.pt").write_bytes(b"PK\x03\x04 cut short")
    code, output = _tool(
        tmp_path,
        "eval.py",
        f"checkpoint={tmp_path / 'model_final.pt'}",
        "dataset=synthetic",
        f"hydra.run.dir={tmp_path / 'eval'}",
    )
    assert code == 1
    assert output.strip().splitlines()[-1].startswith(f"error: checkpoint {tmp_path / 'model_final.pt'} cannot be read")
    assert "Traceback" not in output


def test_a_misspelled_experiment_stops_train_instead_of_training_the_defaults(tmp_path):
    # The experiment group once was optional: a misspelled name then trained configs/train.yaml's
    # defaults without a word.
    code, output = _tool(tmp_path, "train.py", "experiment=tabel2_c4", f"hydra.run.dir={tmp_path / 'run'}")
    assert code == 1
    assert "Could not find 'experiment/tabel2_c4'" in output and "table2_c4" in output, output
    assert "Traceback" not in output and not (tmp_path / "run").exists(), output


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("tool", ["profile_step", "bench_step"])
@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["experiment=tabel2_c4"], "error: In 'train': Could not find 'experiment/tabel2_c4' Available options"),
        (["experiment=demo", "solver.base_lrr=0.1"], "error: Could not override 'solver.base_lrr'."),
        (["experiment=demo", "paths.data_root=/nowhere"], "error: COCO annotation file not found: /nowhere/"),
    ],
)
def test_tools_composing_with_hydra_compose_print_one_error_line(tool, overrides, expected, capsys, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as info:
        _load_tool(tool).main(overrides)
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith(expected) and err.count("\n") == 1 and "Config search path" not in err, err
