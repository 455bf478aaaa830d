"""A training batch crosses from a DataLoader worker to the main process as one shared buffer.

By default each tensor a worker returns travels as its own shared-memory segment: the worker
copies it into fresh shared memory, and the main process fetches every segment's file
descriptor from a thread of the worker that first has to take the GIL from the worker's busy
main thread. A batch holds four or five tensors per image (image, boxes, labels, masks,
orig_size). :func:`collate_packed` instead writes the batch's tensors once into one uint8 buffer,
allocated in shared memory in a worker (as torch's ``default_collate`` does): one segment and one
descriptor per batch. :func:`unpack_batch` gives back the same tensors as views of it (pinned
when the DataLoader pinned the buffer). docs/profile.md has the loader measurements.

Most of a batch's bytes are its binary instance masks ((N, H, W) uint8, one byte per pixel for a
0/1 value: 7.6 MB for an average COCO image at 1333 x 800, twice its uint8 image). They travel as
bits (``np.packbits``, 8x fewer bytes) and are unpacked in the main process; masks with other
values travel as they are.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["pack_batch", "unpack_batch", "collate_packed"]

# Offsets in the buffer are multiples of this, so that every view is aligned for its dtype.
_ALIGN = 64


class _Slot:
    """Where one tensor lies in the buffer. A plain object, not a tuple: the DataLoader's
    pin-memory step turns tuples into lists but passes other objects through."""

    __slots__ = ("offset", "nbytes", "dtype", "shape", "bits")

    def __init__(self, offset: int, nbytes: int, dtype: torch.dtype, shape: tuple[int, ...], bits: bool) -> None:
        self.offset, self.nbytes, self.dtype, self.shape, self.bits = offset, nbytes, dtype, shape, bits

    def __getstate__(self):
        return (self.offset, self.nbytes, self.dtype, self.shape, self.bits)

    def __setstate__(self, state):
        self.offset, self.nbytes, self.dtype, self.shape, self.bits = state

    def stored(self, buffer: torch.Tensor) -> torch.Tensor:
        """The slot's bytes as stored: the tensor's dtype, or the packed bits (1-D uint8)."""
        data = buffer[self.offset : self.offset + self.nbytes]
        return data if self.bits else data.view(self.dtype).view(self.shape)

    def view(self, buffer: torch.Tensor) -> torch.Tensor:
        data = buffer[self.offset : self.offset + self.nbytes]
        if self.bits:  # 0/1 uint8 packed 8 to a byte: unpacked into a new tensor
            return torch.from_numpy(np.unpackbits(data.numpy(), count=math.prod(self.shape)).reshape(self.shape))
        return data.view(self.dtype).view(self.shape)


def pack_batch(batch: list) -> tuple[torch.Tensor, list]:
    """``[(image, target), ...]`` -> ``(buffer, layout)``.

    ``buffer``: (B,) uint8 holding every tensor of the batch (images, and the tensors of the
    target dicts; 0/1 ``masks`` as bits); ``layout``: the batch's structure with each tensor replaced by its slot.
    Values that are not tensors (``image_id``) are kept in the layout as they are.
    """
    placed: list[tuple[_Slot, torch.Tensor]] = []
    offset = 0

    def place(t: torch.Tensor, *, binary: bool = False) -> _Slot:
        nonlocal offset
        shape = tuple(t.shape)
        bits = binary and t.dtype == torch.uint8 and t.numel() > 0 and int(t.max()) <= 1
        if bits:
            t = torch.from_numpy(np.packbits(t.contiguous().numpy().reshape(-1)))
        s = _Slot(offset, t.numel() * t.element_size(), t.dtype, shape, bits)
        placed.append((s, t))
        offset += -(-s.nbytes // _ALIGN) * _ALIGN
        return s

    layout = [
        (
            place(image),
            {k: place(v, binary=k == "masks") if isinstance(v, torch.Tensor) else v for k, v in target.items()},
        )
        for image, target in batch
    ]
    buffer = torch.empty(offset, dtype=torch.uint8)
    if torch.utils.data.get_worker_info() is not None:
        # In a worker: allocated in shared memory at once, so that sending it copies nothing.
        buffer = buffer.new(buffer._typed_storage()._new_shared(offset, device=buffer.device))
    for s, t in placed:
        s.stored(buffer).copy_(t)
    return buffer, layout


def unpack_batch(packed) -> tuple[tuple, tuple]:
    """``(buffer, layout)`` of :func:`pack_batch` -> ``(images, targets)`` as
    :func:`~maskrcnn.data.loader.collate` gives them. Every tensor is a view of the buffer (pinned
    if the buffer is), except masks that travelled as bits (new CPU tensors). ``packed`` may be
    the list the DataLoader's pin-memory step makes of the tuple."""
    buffer, layout = packed
    images, targets = [], []
    for image_slot, target in layout:
        images.append(image_slot.view(buffer))
        targets.append({k: v.view(buffer) if isinstance(v, _Slot) else v for k, v in target.items()})
    return tuple(images), tuple(targets)


def collate_packed(batch: list) -> tuple[torch.Tensor, list]:
    """The ``collate_fn`` of loaders with worker processes: :func:`pack_batch`."""
    return pack_batch(batch)
