"""Loads the native extension ``maskrcnn._C``, which registers the kernels of ``torch.ops.maskrcnn``.

torch must be imported first: the extension links against libtorch and expects its symbols
to be loaded already.
"""

import torch  # noqa: F401  (must come before the extension)

try:
    from maskrcnn import _C  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the build state
    raise ImportError(
        "the native RoI ops (maskrcnn._C) are not built or do not load: run `make build` in the "
        f"repository root to (re)build them. Cause: {error}"
    ) from error
