"""Optional dependencies: a missing one is one line naming the package and the extra to install.

The core (training, evaluation, data, TensorBoard logging) needs only the required dependencies of
``pyproject.toml``. Figures and charts need matplotlib (extra ``viz``); cluster sweeps need Hydra's
submitit launcher (extra ``cluster``).
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["OPTIONAL", "MissingDependency", "require"]

# module -> (pip package, extra of this project that installs it)
OPTIONAL = {
    "matplotlib": ("matplotlib", "viz"),
    "submitit": ("submitit", "cluster"),
    "hydra_plugins.hydra_submitit_launcher": ("hydra-submitit-launcher", "cluster"),
}


class MissingDependency(ImportError):
    """An optional package that a requested feature needs is not installed."""


def require(module: str, *, purpose: str) -> ModuleType:
    """``import module``, or :class:`MissingDependency` saying ``purpose`` needs it and how to get it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        package, extra = OPTIONAL[module]
        raise MissingDependency(
            f"{purpose} needs {package}, which is not installed: pip install -e '.[{extra}]' (or pip install {package})"
        ) from None
