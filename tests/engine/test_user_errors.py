"""A user's mistake is one line (``error: ...``, exit status 1); a bug keeps its traceback."""

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from maskrcnn.data import ImageReadError, read_image
from maskrcnn.engine.checkpoint import set_rng_state
from maskrcnn.engine.config import ConfigError
from maskrcnn.engine.user_errors import exit_on_user_error, user_error_message


def _caught(fn):
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - the test inspects it
        return exc
    raise AssertionError("no exception")


def test_own_raise_is_a_user_error_and_instantiate_is_unwrapped(tmp_path):
    missing = tmp_path / "missing.jpg"
    assert user_error_message(_caught(lambda: read_image(missing))) == f"image file not found: {missing}"
    wrapped = _caught(
        lambda: instantiate(
            {
                "_target_": "maskrcnn.data.CocoDetection",
                "image_dir": str(tmp_path),
                "annotation_file": str(tmp_path / "a.json"),
            }
        )
    )
    assert type(wrapped).__name__ == "InstantiationException"
    assert user_error_message(wrapped).startswith(f"COCO annotation file not found: {tmp_path / 'a.json'}")


def test_errors_of_builtins_and_libraries_are_bugs():
    # random.setstate rejects the state inside our set_rng_state: a builtin raised, not our check
    assert user_error_message(_caught(lambda: set_rng_state({"python": (1, 2)}))) is None
    assert user_error_message(_caught(lambda: torch.nn.functional.interpolate(torch.zeros(1), size=2))) is None
    assert user_error_message(_caught(lambda: (_ for _ in ()).throw(ConfigError("not raised by us")))) is None


class _Unreadable(torch.utils.data.Dataset):
    def __init__(self, path):
        self.path = path

    def __len__(self):
        return 1

    def __getitem__(self, i):
        return read_image(self.path)


def test_dataloader_worker_errors_lose_the_worker_traceback(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 junk")
    loader = torch.utils.data.DataLoader(_Unreadable(tmp_path / "bad.jpg"), num_workers=1)
    exc = _caught(lambda: next(iter(loader)))
    assert isinstance(exc, ImageReadError) and "Original Traceback" in str(exc)
    message = user_error_message(exc)
    assert "bad.jpg" in message and "Traceback" not in message and "\n" not in message


def test_exit_on_user_error_prints_one_line_and_exits_1(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as info, exit_on_user_error():
        read_image(tmp_path / "none.jpg")
    assert info.value.code == 1
    assert capsys.readouterr().err == f"error: image file not found: {tmp_path / 'none.jpg'}\n"
    with pytest.raises(ValueError), exit_on_user_error():  # a bug: the exception (and traceback) go on
        np.zeros(2).reshape(3)
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(ImageReadError), exit_on_user_error():
        read_image(tmp_path / "none.jpg")
