"""Compile check of the CUDA kernels on a machine without a GPU (runs in CI).

Every ``ops/cuda/*.cu`` is compiled by nvcc to an object file with the include directories and
flags that ``setup.py`` gives the extension under ``FORCE_CUDA=1`` (read from setup.py itself, so
the check cannot drift from the build), for one architecture (sm_90) to save time, two files at
a time. A CUDA compile error therefore fails CI although CI never runs a kernel. The GPU
behaviour is tested by tests/ops/test_cuda_*.py on a GPU machine (``pytest -m cuda``).

Without nvcc the test is skipped with the reason, except under ``CI=true`` where it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
CUDA_SOURCES = sorted((REPO_ROOT / "ops" / "cuda").glob("*.cu"))
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
ARCH_FLAGS = ["-gencode=arch=compute_90,code=sm_90"]

# Runs setup.py with setuptools.setup replaced by a recorder and prints the extension's settings.
_PROBE = r"""
import json, os, runpy, sys
import setuptools
captured = {}
setuptools.setup = lambda **kw: captured.update(kw)
os.chdir(sys.argv[1])
runpy.run_path("setup.py", run_name="__main__")
exts = captured.get("ext_modules") or []
print(json.dumps([{"class": type(e).__name__, "sources": list(e.sources),
                   "define_macros": [list(m) for m in e.define_macros],
                   "include_dirs": list(e.include_dirs),
                   "extra_compile_args": e.extra_compile_args} for e in exts]))
"""


def _cuda_home() -> Path | None:
    for candidate in (
        os.environ.get("CUDA_HOME"),
        os.environ.get("CUDA_PATH"),
        "/usr/local/cuda-13.0",
        "/usr/local/cuda",
    ):
        if candidate and (Path(candidate) / "bin" / "nvcc").is_file():
            return Path(candidate)
    nvcc = shutil.which("nvcc")
    if nvcc:
        home = Path(nvcc).resolve().parent.parent
        if (home / "include" / "cuda_runtime.h").is_file():
            return home
    return None


def _require_nvcc() -> Path:
    home = _cuda_home()
    if home is None:
        message = "nvcc not found (set CUDA_HOME to a CUDA toolkit)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return home


def _setup_extension(env_overrides: dict[str, str]) -> dict:
    env = dict(os.environ, **env_overrides)
    env.pop("MASKRCNN_NO_EXT", None)
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, str(REPO_ROOT)], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"setup.py failed:\n{result.stderr[-4000:]}"
    extensions = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(extensions) == 1, extensions
    return extensions[0]


def _nvidia_include_dirs() -> list[str]:
    """Headers of the nvidia-* wheels (cuBLAS, cuSPARSE, ...) that torch's CUDA headers include."""
    dirs = []
    for entry in sys.path:
        nvidia = Path(entry) / "nvidia"
        if nvidia.is_dir():
            dirs += sorted(str(p) for p in nvidia.glob("*/include") if p.is_dir())
    return dirs


def _cxx_standard() -> str:
    # torch's extension builder passes -std=c++17 up to 2.12 and -std=c++20 from 2.13.
    major, minor = (int(v) for v in torch.__version__.split(".")[:2])
    return "-std=c++20" if (major, minor) >= (2, 13) else "-std=c++17"


def test_setup_selects_cuda_extension_when_forced(tmp_path):
    """FORCE_CUDA=1 makes setup.py build a CUDAExtension holding every ops/cuda/*.cu."""
    home = _require_nvcc()
    ext = _setup_extension({"FORCE_CUDA": "1", "CUDA_HOME": str(home)})
    sources = {Path(s).as_posix() for s in ext["sources"]}
    assert {f"ops/cuda/{p.name}" for p in CUDA_SOURCES} <= sources
    assert ["WITH_CUDA", None] in ext["define_macros"]
    assert isinstance(ext["extra_compile_args"], dict) and "nvcc" in ext["extra_compile_args"]
    assert any(Path(d).resolve() == (REPO_ROOT / "ops").resolve() for d in ext["include_dirs"])


def test_setup_without_cuda_has_no_cuda_sources():
    """Without FORCE_CUDA on a machine without a GPU, the extension is CPU-only."""
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: setup.py builds the CUDA kernels")
    ext = _setup_extension({"FORCE_CUDA": "0"})
    assert not [s for s in ext["sources"] if s.endswith(".cu")]
    assert ["WITH_CUDA", None] not in ext["define_macros"]


def _compile(nvcc: Path, source: Path, out_dir: Path, flags: list[str]) -> tuple[Path, int, str]:
    obj = out_dir / (source.stem + ".o")
    cmd = [str(nvcc), "-c", str(source), "-o", str(obj), *flags]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    return source, result.returncode, result.stdout + result.stderr


def test_cuda_sources_compile_with_nvcc(tmp_path):
    assert CUDA_SOURCES, "no CUDA sources in ops/cuda"
    home = _require_nvcc()
    ext = _setup_extension({"FORCE_CUDA": "1", "CUDA_HOME": str(home)})
    includes = list(ext["include_dirs"]) + _nvidia_include_dirs() + [sysconfig.get_paths()["include"]]
    macros = [f"-D{name}" if value is None else f"-D{name}={value}" for name, value in ext["define_macros"]]
    from torch.utils.cpp_extension import COMMON_NVCC_FLAGS

    flags = [
        _cxx_standard(),
        *COMMON_NVCC_FLAGS,
        "--compiler-options",
        "-fPIC",
        *ext["extra_compile_args"]["nvcc"],
        *macros,
        "-DTORCH_API_INCLUDE_EXTENSION_H",
        "-DTORCH_EXTENSION_NAME=_C",
        f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
        *(f"-I{d}" for d in includes),
        *ARCH_FLAGS,
    ]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda s: _compile(home / "bin" / "nvcc", s, tmp_path, flags), CUDA_SOURCES))
    failures = [f"{src.name} (exit {rc}):\n{log[-6000:]}" for src, rc, log in results if rc != 0]
    assert not failures, "nvcc failed:\n" + "\n\n".join(failures)
    for src, _, _ in results:
        assert (tmp_path / (src.stem + ".o")).stat().st_size > 0
