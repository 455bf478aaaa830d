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

A worker does not allocate a new segment per batch: creating one, and the main process mapping
it, costs more than the batch's compute (page faults on 8 MB of fresh shared memory on both
sides, and a file-descriptor round trip). Each worker keeps a few reusable slots
(:class:`WorkerSlots`); a :class:`Shipment` carries the slot's tensor only on its first trip, and
the :class:`SlotReceiver` of the training loop keeps every slot it has seen mapped and hands a
slot back (clears its in-flight flag) once the batch's tensors, views of the slot, are freed; with
CUDA it copies the batch into pinned memory and hands the slot back at once. docs/profile.md has the measurements.
"""

from __future__ import annotations

import math
import os
import weakref

import numpy as np
import torch

__all__ = ["pack_batch", "unpack_batch", "collate_packed", "Shipment", "SlotReceiver", "WorkerSlots"]

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


def _plan(batch: list) -> tuple[list[tuple[_Slot, torch.Tensor]], int, list]:
    """Where each tensor of ``batch`` goes: ``(placed, nbytes, layout)`` (see :func:`pack_batch`)."""
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
    return placed, offset, layout


def _write(placed: list[tuple[_Slot, torch.Tensor]], buffer: torch.Tensor) -> None:
    for s, t in placed:
        s.stored(buffer).copy_(t)


def pack_batch(batch: list) -> tuple[torch.Tensor, list]:
    """``[(image, target), ...]`` -> ``(buffer, layout)``.

    ``buffer``: (B,) uint8 holding every tensor of the batch (images, and the tensors of the
    target dicts; 0/1 ``masks`` as bits); ``layout``: the batch's structure with each tensor replaced by its slot.
    Values that are not tensors (``image_id``) are kept in the layout as they are.
    """
    placed, nbytes, layout = _plan(batch)
    buffer = torch.empty(nbytes, dtype=torch.uint8)
    _write(placed, buffer)
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


# A slot: a 1-D uint8 tensor in shared memory; byte 0 is 1 while a batch written there is in
# flight (set by the worker, cleared by the receiver once the batch's tensors are freed, or copied
# into pinned memory), the batch starts at _HEADER.
_HEADER = _ALIGN
_GRANULE = 1 << 20  # slot capacities are rounded up to this, with a quarter to spare


class Shipment:
    """One packed batch on its way from a worker: ``slot`` (the tensor: only on the slot's first
    trip, else None), which slot of which worker (``owner``: the worker's pid), ``nbytes`` used in
    it and the batch's ``layout`` (:func:`pack_batch`). Outside a worker (``owner`` None), ``slot``
    is the plain buffer of :func:`pack_batch`."""

    __slots__ = ("owner", "index", "nbytes", "slot", "layout")

    def __init__(self, *, owner: int | None, index: int, nbytes: int, slot: torch.Tensor | None, layout: list):
        self.owner, self.index, self.nbytes, self.slot, self.layout = owner, index, nbytes, slot, layout

    def __getstate__(self):
        return (self.owner, self.index, self.nbytes, self.slot, self.layout)

    def __setstate__(self, state):
        self.owner, self.index, self.nbytes, self.slot, self.layout = state


class WorkerSlots:
    """A worker's reusable shared-memory slots. A slot is refilled only after the receiver cleared
    its flag, which it does after it has mapped the slot: so a slot's tensor needs to travel on
    its first trip only. The DataLoader keeps at most ``prefetch_factor`` batches of a worker in
    flight, so a worker holds a few slots."""

    def __init__(self) -> None:
        self.slots: list[torch.Tensor] = []
        self.sent: list[bool] = []

    def _free_slot(self, nbytes: int) -> int:
        free = [i for i, slot in enumerate(self.slots) if int(slot[0]) == 0]
        for i in free:
            if self.slots[i].numel() - _HEADER >= nbytes:
                return i
        i = free[0] if free else len(self.slots)  # replace a free slot that is too small, or add one
        capacity = _HEADER + -(-(nbytes + nbytes // 4) // _GRANULE) * _GRANULE
        slot = torch.zeros(capacity, dtype=torch.uint8).share_memory_()
        if i == len(self.slots):
            self.slots.append(slot)
            self.sent.append(False)
        else:
            self.slots[i], self.sent[i] = slot, False
        return i

    def ship(self, batch: list) -> Shipment:
        placed, nbytes, layout = _plan(batch)
        i = self._free_slot(nbytes)
        slot = self.slots[i]
        _write(placed, slot[_HEADER : _HEADER + nbytes])
        slot[0] = 1
        first_trip = not self.sent[i]
        self.sent[i] = True
        return Shipment(owner=os.getpid(), index=i, nbytes=nbytes, slot=slot if first_trip else None, layout=layout)


class SlotReceiver:
    """The training loop's end of the transport: ``receive(shipment)`` -> ``(images, targets)``
    as :func:`~maskrcnn.data.loader.collate` gives them: views of the worker's slot, which goes
    back to the worker when they are all freed (or, with ``pin_memory``, a pinned copy, and the
    slot goes back at once). Masks that travelled as bits are new tensors."""

    def __init__(self, *, pin_memory: bool = False) -> None:
        self.pin_memory = pin_memory
        self.mapped: dict[tuple[int, int], torch.Tensor] = {}

    def receive(self, shipment: Shipment) -> tuple[tuple, tuple]:
        key = (shipment.owner, shipment.index)
        if shipment.slot is not None:
            slot = shipment.slot
            if shipment.owner is not None:
                self.mapped[key] = slot  # kept mapped: its later trips come without it
        else:
            slot = self.mapped.get(key)
            if slot is None:
                raise RuntimeError(
                    f"batch in slot {shipment.index} of worker {shipment.owner} arrived before the slot itself; "
                    "a Shipment must be received by the SlotReceiver that received that worker's earlier batches"
                )
        if shipment.owner is None:  # packed in this process: the buffer is ours
            return unpack_batch((slot, shipment.layout))
        data = slot[_HEADER : _HEADER + shipment.nbytes]
        if self.pin_memory:  # copied into pinned memory, and the slot handed back at once
            buffer = torch.empty(shipment.nbytes, dtype=torch.uint8, pin_memory=True)
            buffer.copy_(data)
            _release(slot)
        else:
            # No copy: the batch's tensors are views of the slot, through one ndarray that every
            # view's storage holds; when the last of them is freed, the slot goes back to its worker.
            array = slot.numpy()[_HEADER : _HEADER + shipment.nbytes]
            buffer = torch.from_numpy(array)
            weakref.finalize(array, _release, slot).atexit = False
        return unpack_batch((buffer, shipment.layout))


def _release(slot: torch.Tensor) -> None:
    slot[0] = 0  # the worker may refill the slot


_worker_slots: dict[int, WorkerSlots] = {}  # by process id: a forked worker starts from its parent's


def collate_packed(batch: list) -> Shipment:
    """The ``collate_fn`` of loaders with worker processes; :meth:`SlotReceiver.receive` is the
    other end. In a worker the batch goes into one of its reusable shared-memory slots; outside a
    worker (tests, ``num_workers=0``) into a plain buffer."""
    if torch.utils.data.get_worker_info() is None:
        buffer, layout = pack_batch(batch)
        return Shipment(owner=None, index=0, nbytes=buffer.numel(), slot=buffer, layout=layout)
    return _worker_slots.setdefault(os.getpid(), WorkerSlots()).ship(batch)
