"""pack_batch / unpack_batch: the same tensors (values, dtypes, shapes) through one buffer, also
through the worker pickler, a worker's reusable shared-memory slots and pinned memory."""

from __future__ import annotations

import gc
import pickle
from multiprocessing.reduction import ForkingPickler

import pytest
import torch
import torch.multiprocessing  # noqa: F401  (registers the shared-memory reductions of tensors)

from maskrcnn.data.batch_transport import SlotReceiver, WorkerSlots, collate_packed, pack_batch, unpack_batch
from maskrcnn.data.loader import collate


def _batch():
    g = torch.Generator().manual_seed(0)
    a = (
        torch.randint(0, 256, (3, 5, 7), generator=g, dtype=torch.uint8),
        {
            "boxes": torch.rand(2, 4, generator=g),
            "labels": torch.tensor([3, 1]),
            "image_id": 11,
            "masks": torch.randint(0, 2, (2, 5, 7), generator=g, dtype=torch.uint8),
            "orig_size": torch.tensor([5, 7]),
            "areas": torch.rand(2, generator=g, dtype=torch.float64),
        },
    )
    b = (
        torch.randint(0, 256, (3, 9, 4), generator=g, dtype=torch.uint8)[:, :, 1:],  # not contiguous
        {
            "boxes": torch.zeros(0, 4),
            "labels": torch.zeros(0, dtype=torch.int64),
            "image_id": 12,
            "masks": torch.zeros(0, 9, 3, dtype=torch.uint8),
            "orig_size": torch.tensor([9, 3]),
            "flags": torch.tensor([True, False]),
        },
    )
    c = (
        torch.zeros(3, 2, 2, dtype=torch.uint8),  # masks that are not 0/1 travel as bytes
        {"masks": torch.tensor([[[0, 2], [255, 1]]], dtype=torch.uint8), "image_id": 13},
    )
    return [a, b, c]


def _assert_same(got, expected):
    (images, targets), (images_e, targets_e) = got, expected
    assert len(images) == len(images_e)
    for im, im_e in zip(images, images_e):
        assert im.dtype == im_e.dtype and torch.equal(im, im_e)
    for t, t_e in zip(targets, targets_e):
        assert t.keys() == t_e.keys()
        for k in t_e:
            if isinstance(t_e[k], torch.Tensor):
                assert t[k].dtype == t_e[k].dtype and t[k].shape == t_e[k].shape and torch.equal(t[k], t_e[k]), k
            else:
                assert t[k] == t_e[k], k


def test_round_trip_is_exact_and_views_one_buffer():
    batch = _batch()
    buffer, layout = pack_batch(batch)
    assert buffer.dtype == torch.uint8 and buffer.dim() == 1
    images, targets = unpack_batch((buffer, layout))
    _assert_same((images, targets), collate(batch))
    ptr = buffer.untyped_storage().data_ptr()
    for t in [
        *images,
        *(v for target in targets for k, v in target.items() if isinstance(v, torch.Tensor) and k != "masks"),
    ]:
        assert t.untyped_storage().data_ptr() == ptr  # views, no copies
    # The 0/1 masks (2 x 5 x 7 = 70 values) took 9 bytes; the 0/2/255 ones their 4 bytes.
    assert layout[0][1]["masks"].nbytes == 9 and layout[2][1]["masks"].nbytes == 4


def _send(shipment):
    # What crosses from a DataLoader worker: the pickle of ForkingPickler (tensors in shared
    # memory travel as file descriptors; in this process they map the same memory).
    return pickle.loads(ForkingPickler.dumps(shipment))


def test_round_trip_outside_a_worker():
    shipment = collate_packed(_batch())
    assert shipment.owner is None
    _assert_same(SlotReceiver().receive(_send(shipment)), collate(_batch()))


def test_worker_slots_are_reused_once_the_batch_is_freed():
    slots, receiver = WorkerSlots(), SlotReceiver()
    first = slots.ship(_batch())
    assert first.slot is not None and first.slot.is_shared() and int(first.slot[0]) == 1  # in flight
    received = receiver.receive(_send(first))
    _assert_same(received, collate(_batch()))
    # While the batch's tensors live, its slot stays taken: the next batch goes to a new slot.
    second = slots.ship(_batch()[::-1])
    assert second.index == 1 and second.slot is not None
    _assert_same(receiver.receive(_send(second)), collate(_batch()[::-1]))  # freed at once
    _assert_same(received, collate(_batch()))  # the first batch was not overwritten
    assert int(slots.slots[0][0]) == 1 and int(slots.slots[1][0]) == 0
    del received
    gc.collect()
    assert int(slots.slots[0][0]) == 0
    # A free slot is refilled, and its tensor does not travel again: the receiver kept it mapped.
    third = slots.ship(_batch())
    assert third.index == 0 and third.slot is None
    _assert_same(receiver.receive(_send(third)), collate(_batch()))
    # A batch larger than every free slot replaces one, and the new slot travels.
    big = [(torch.randint(0, 256, (3, 800, 800), dtype=torch.uint8), {"image_id": 1})]
    fourth = slots.ship(big)
    assert fourth.slot is not None and len(slots.slots) == 2
    images, _ = receiver.receive(_send(fourth))
    assert torch.equal(images[0], big[0][0])


def test_a_slot_without_its_first_trip_is_an_error():
    slots = WorkerSlots()
    slots.ship(_batch())  # the first trip, never received
    slots.slots[0][0] = 0
    with pytest.raises(RuntimeError, match="arrived before the slot itself"):
        SlotReceiver().receive(_send(slots.ship(_batch())))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned memory needs CUDA")
def test_round_trip_through_pinned_memory():
    slots = WorkerSlots()
    images, targets = SlotReceiver(pin_memory=True).receive(_send(slots.ship(_batch())))
    assert all(im.is_pinned() for im in images) and int(slots.slots[0][0]) == 0  # copied: handed back
    _assert_same((images, targets), collate(_batch()))
