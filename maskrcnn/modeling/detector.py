"""The two-stage detector: transform -> backbone -> RPN -> RoI heads -> outputs in image pixels."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .mask_paste import paste_masks_in_image
from .roi_heads import RoIHeads
from .rpn import RPN
from .transform import ImageTransform, resize_boxes

__all__ = ["GeneralizedRCNN"]

# How to train on box-only data (named by the errors of a mask model given no masks).
BOX_ONLY_REMEDY = (
    "train a box-only model: model=faster_rcnn_r18_fpn_small or faster_rcnn_r18_c4_small "
    "(faster_rcnn_r50_fpn / faster_rcnn_r50_c4 at full size), or give the data masks"
)


class GeneralizedRCNN(nn.Module):
    """Faster R-CNN (no mask branch) or Mask R-CNN, torchvision's calling convention.

    ``images`` are (3, H_i, W_i) RGB tensors, uint8 in [0, 255] (our datasets' format) or
    floating point in [0, 1] (torchvision's); the model converts and normalises them on its own
    device (:class:`~maskrcnn.modeling.transform.ImageTransform`), so a uint8 image gives bitwise
    the losses and detections of the float image ``image.float() / 255``.

    ``model(images, targets)`` in training returns the loss dict (``loss_objectness``,
    ``loss_rpn_box_reg``, ``loss_classifier``, ``loss_box_reg`` and, with masks, ``loss_mask``)
    and records counters with :func:`maskrcnn.events.put_scalar`; in eval it returns per image ``boxes`` (D, 4) XYXY
    in the pixels of the given image, ``labels`` (D,) in 1..num_classes, ``scores`` (D,) and,
    with masks, ``masks`` (D, 1, H, W) probabilities pasted at the given image size.

    ``init`` (the model config's ``init``) names the weights a training run starts from; training
    loads them (:func:`maskrcnn.modeling.pretrained.initialize_detector`), the constructor only
    records the name, so that building a model to evaluate a checkpoint never fetches them.
    """

    def __init__(
        self, *, transform: ImageTransform, backbone: nn.Module, rpn: RPN, roi_heads: RoIHeads, init: str | None = None
    ) -> None:
        super().__init__()
        self.init = init
        self.transform = transform
        self.backbone = backbone
        self.rpn = rpn
        self.roi_heads = roi_heads

    @property
    def mask_on(self) -> bool:
        return self.roi_heads.mask_on

    def _check_targets(self, images: list[Tensor], targets: list[dict[str, Tensor]]) -> None:
        if len(targets) != len(images):
            raise ValueError(f"got {len(images)} images but {len(targets)} targets")
        for i, (img, t) in enumerate(zip(images, targets)):
            for key in ("boxes", "labels"):
                if key not in t:
                    raise ValueError(f"target {i} has no {key!r} (keys: {sorted(t)})")
            if self.mask_on and "masks" not in t:
                raise ValueError(
                    f"target {i} has no 'masks' but the model has a mask branch (box-only data, "
                    f"or dataset.train.with_masks=false): {BOX_ONLY_REMEDY}"
                )
            boxes = t["boxes"]
            if boxes.dim() != 2 or boxes.shape[1] != 4 or not boxes.is_floating_point():
                raise ValueError(f"target {i}: boxes must be float (N, 4), got {boxes.dtype} {tuple(boxes.shape)}")
            if t["labels"].dtype != torch.int64 or t["labels"].shape != boxes.shape[:1]:
                raise ValueError(
                    f"target {i}: labels must be int64 (N,), got {t['labels'].dtype} "
                    f"{tuple(t['labels'].shape)} for {boxes.shape[0]} boxes"
                )
            if boxes.numel() and (boxes[:, 2:] <= boxes[:, :2]).any():
                bad = boxes[(boxes[:, 2:] <= boxes[:, :2]).any(1)][0].tolist()
                raise ValueError(f"target {i}: boxes need positive width and height, found {bad}")
            if self.mask_on and tuple(t["masks"].shape[-2:]) != tuple(img.shape[-2:]):
                raise ValueError(
                    f"target {i}: masks {tuple(t['masks'].shape)} do not match the image {tuple(img.shape)}"
                )

    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None):
        if self.training:
            if targets is None:
                raise ValueError("targets are required in training mode")
            self._check_targets(images, targets)
        orig_sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
        batch, sizes = self.transform(images)
        features = self.backbone(batch)
        proposals, rpn_losses = self.rpn(list(features.values()), sizes, tuple(batch.shape[-2:]), targets)
        detections, head_losses = self.roi_heads(features, proposals, sizes, targets)
        if self.training:
            return {**rpn_losses, **head_losses}
        for det, size, orig in zip(detections, sizes, orig_sizes):
            det["boxes"] = resize_boxes(det["boxes"], size, orig)
            if "masks" in det:
                det["masks"] = paste_masks_in_image(det["masks"], det["boxes"], orig)
        return detections
