"""Builds the native extension ``maskrcnn._C`` from the sources in ``ops/``.

The CPU kernels are always built. The CUDA kernels are added when torch sees a GPU or when
``FORCE_CUDA=1`` is set (for example in ``docker build``, where no GPU is visible); the target
architectures come from ``TORCH_CUDA_ARCH_LIST`` as usual for torch extensions.
``MASKRCNN_NO_EXT=1`` skips the extension (the Makefile registers the editable package that way
and then builds the extension incrementally with ``setup.py build_ext --inplace``).

``MASKRCNN_BUILD=cuda-emulation`` builds, instead, ``maskrcnn._C_cuda_emu``: the CUDA kernels of
``ops/cuda`` compiled as host C++ for device emulation (``make build-cuda-emulation``; docs/ops.md,
"CUDA device emulation"), with no CUDA toolkit. ``MASKRCNN_SANITIZE=address,undefined`` or
``thread`` adds the sanitizers to that build (``make sanitize-cuda-emulation``).
"""

import glob
import os

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _sources(pattern):
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def _pip_cuda_include_dirs():
    # torch's CUDA headers include cuBLAS / cuSPARSE headers that a bare toolkit may lack; the
    # nvidia-* wheels that CUDA torch depends on ship them (site-packages/nvidia/*/include).
    import site

    roots = site.getsitepackages() + [site.getusersitepackages()]
    return sorted({d for r in roots for d in glob.glob(os.path.join(r, "nvidia", "*", "include"))})


def _cuda_emulation_extension():
    from torch.utils.cpp_extension import BuildExtension, CppExtension

    # Each ops/cuda/emulation/*.cpp includes one ops/cuda/*.cu (BuildExtension sends .cu files to nvcc).
    sources = _sources("ops/cuda/emulation/*.cpp")
    # -ffp-contract=off: no fused multiply-adds, so the host arithmetic is the source's (nvcc does
    # contract; the tests compare with tolerances). #pragma unroll is nvcc's.
    flags = ["-O2", "-fopenmp", "-ffp-contract=off", "-Wno-unknown-pragmas"]
    link = ["-fopenmp"]
    sanitize = os.environ.get("MASKRCNN_SANITIZE", "")
    if sanitize:
        flags = ["-O1", "-g", "-fno-omit-frame-pointer", f"-fsanitize={sanitize}", "-fopenmp", "-Wno-unknown-pragmas"]
        if "undefined" in sanitize:
            flags.append("-fno-sanitize-recover=undefined")
        link = [f"-fsanitize={sanitize}", "-fopenmp"]
    extension = CppExtension(
        "maskrcnn._C_cuda_emu",
        sources,
        include_dirs=[os.path.join(ROOT, "ops")],
        define_macros=[("MASKRCNN_CUDA_EMULATION", None)],
        extra_compile_args={"cxx": flags},
        extra_link_args=link,
    )
    return [extension], {"build_ext": BuildExtension.with_options(use_ninja=True)}


def _extensions():
    if os.environ.get("MASKRCNN_NO_EXT") == "1":
        return [], {}
    if os.environ.get("MASKRCNN_BUILD") == "cuda-emulation":
        return _cuda_emulation_extension()
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

    sources = _sources("ops/*.cpp") + _sources("ops/cpu/*.cpp")
    # No -std flag: torch adds the standard its headers need (C++17 up to 2.12, C++20 after).
    cxx_flags = ["-O3", "-fopenmp"]
    define_macros = []
    force_cuda = os.environ.get("FORCE_CUDA") == "1"
    if force_cuda and not CUDA_HOME:
        raise RuntimeError("FORCE_CUDA=1 but no CUDA toolkit was found: set CUDA_HOME to its folder")
    if (torch.cuda.is_available() or force_cuda) and CUDA_HOME:
        sources += _sources("ops/cuda/*.cu")
        define_macros.append(("WITH_CUDA", None))
        # -isystem: searched after the toolkit's own -I folders, so these only fill its gaps.
        fallback_includes = [flag for d in _pip_cuda_include_dirs() for flag in ("-isystem", d)]
        nvcc_flags = ["-O3", "--expt-relaxed-constexpr", "-lineinfo"] + fallback_includes
        cxx_flags = cxx_flags + fallback_includes
        extension = CUDAExtension(
            "maskrcnn._C",
            sources,
            include_dirs=[os.path.join(ROOT, "ops")],
            define_macros=define_macros,
            extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags},
            extra_link_args=["-fopenmp"],
        )
    else:
        extension = CppExtension(
            "maskrcnn._C",
            sources,
            include_dirs=[os.path.join(ROOT, "ops")],
            define_macros=define_macros,
            extra_compile_args={"cxx": cxx_flags},
            extra_link_args=["-fopenmp"],
        )
    return [extension], {"build_ext": BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = _extensions()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
