"""One clear line for a user's mistake, a traceback for a bug.

The framework's checks (config validation, dataset loading, checkpoints, inputs) raise
ValueError / OSError / RuntimeError subclasses whose message names the culprit and the fix. A
tool wraps its work in :func:`exit_on_user_error`: such an error, raised by a ``raise`` statement
of this framework's own code, is printed as ``error: <message>`` and the process exits with
status 1. Anything else (raised inside torch, Hydra, pycocotools, or by a builtin our code
called: a bug, not a mistake) keeps its traceback, as does everything with ``HYDRA_FULL_ERROR=1``.
A tool that composes its config with ``hydra.compose`` (not ``@hydra.main``, which prints these
itself) also gets Hydra's own composition errors (a misspelled key, config name or override) as
one line.
"""

from __future__ import annotations

import contextlib
import dis
import os
import re
import sys
from pathlib import Path

from hydra.errors import (
    ConfigCompositionException,
    InstantiationException,
    MissingConfigException,
    OverrideParseException,
)

from ..distributed import is_main_process
from .config import REPO_ROOT

# Where our own checks live: the package and the tools.
_OWN_DIRS = (Path(__file__).resolve().parents[1], REPO_ROOT / "tools")
USER_ERROR_TYPES = (ValueError, OSError, RuntimeError, FloatingPointError)
_RAISE = dis.opmap["RAISE_VARARGS"]
# What hydra.compose raises for a mistake in the overrides: its message names it.
_COMPOSITION_ERRORS = (ConfigCompositionException, MissingConfigException, OverrideParseException)
# torch re-raises a DataLoader worker's error with the worker's traceback in the message.
_WORKER_TRACEBACK = re.compile(r"^Caught \w+ in DataLoader worker process \d+\.\s*Original Traceback")


def _is_own_file(filename: str) -> bool:
    path = Path(filename).resolve()
    return any(own == path or own in path.parents for own in _OWN_DIRS)


def _raised_in_own_code(exc: BaseException) -> bool:
    """True if the innermost frame is ours and stopped at a ``raise`` statement (not at a call of
    a builtin, such as torch.cat, that raised)."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code
    if not _is_own_file(code.co_filename):
        return False
    return 0 <= tb.tb_lasti < len(code.co_code) and code.co_code[tb.tb_lasti] == _RAISE


def user_error_message(exc: BaseException) -> str | None:
    """The one-line message of a mistake this framework's checks caught, else None (a bug)."""
    # hydra.utils.instantiate wraps what a dataset or model constructor raised.
    while isinstance(exc, InstantiationException) and exc.__cause__ is not None:
        exc = exc.__cause__
    if isinstance(exc, _COMPOSITION_ERRORS):  # the search path Hydra appends is its internals
        return _one_line(str(exc).split("Config search path:")[0]) or type(exc).__name__
    if not isinstance(exc, USER_ERROR_TYPES) or isinstance(exc, NotImplementedError):
        return None
    message = str(exc).strip()
    if _WORKER_TRACEBACK.match(message):
        frames = re.findall(r'File "([^"]+)"', message)
        if not frames or not _is_own_file(frames[-1]):
            return None
        last = message.splitlines()[-1]  # "maskrcnn.data.io.ImageReadError: <message>"
        return last.split(": ", 1)[1] if ": " in last else last
    if not _raised_in_own_code(exc):
        return None
    return _one_line(message) or type(exc).__name__


def _one_line(message: str) -> str:
    return " ".join(line.strip() for line in message.splitlines() if line.strip())


@contextlib.contextmanager
def exit_on_user_error():
    """Run the block; a user's mistake becomes ``error: <message>`` on stderr and exit status 1."""
    try:
        yield
    except Exception as exc:
        message = user_error_message(exc)
        if message is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        if is_main_process():
            print(f"error: {message}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
