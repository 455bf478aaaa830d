"""The ``target`` fixture of the CUDA kernel tests: each test runs on a GPU (``cuda``, marker
`cuda`, skipped without one) and on the emulated CUDA kernels (``emulated``, always; built by
`make build-cuda-emulation`, which `make test` runs). Outside CI a missing emulation build skips
with the command to run; under CI=true it is a failure."""

from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(params=["emulated", pytest.param("cuda", marks=pytest.mark.cuda)])
def target(request):
    from cuda_cases import Target

    if request.param == "emulated":
        from maskrcnn.ops._loader import cuda_emulation_library_path

        path = cuda_emulation_library_path()
        if path is None or not os.path.isfile(path):
            message = "the emulated CUDA kernels are not built: run `make build-cuda-emulation`"
            if IN_CI:
                pytest.fail(message)
            pytest.skip(message)
    return Target(request.param)
