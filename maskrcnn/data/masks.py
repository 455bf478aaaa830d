"""Instance masks kept in their cheapest form until the final image size is known.

Decoding every COCO polygon at full resolution and then resizing N bitmaps is the hot spot of a
naive loader. Here polygons are transformed as coordinates (resize = scale the vertices, flip =
mirror them) and rasterized once, by pycocotools, at the size of the image the model gets.
Untransformed polygons are rasterized over the whole image, exactly as pycocotools' annToMask;
transformed ones only inside their bounding box (cost ~ object area, not image area), which can
differ from a whole-image rasterization by edge pixels where a vertex lies on a rounding tie.
Bitmap sources (RLE, VOC's SegmentationObject PNG) are decoded at their own size and resized once
with centre-aligned nearest-neighbour sampling.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import pycocotools.mask as mask_utils


@dataclass
class _Polygon:
    parts: list[np.ndarray]  # each (2K,) float64, x0 y0 x1 y1 ... in pixels of the current size


@dataclass
class _RLE:
    rle: dict  # pycocotools RLE at the source size (compressed or uncompressed counts)


@dataclass
class _Label:
    value: int  # pixel value of this instance in the shared label map


class InstanceMasks:
    """N instance masks of an image whose current size is (height, width).

    Entries are polygons, RLEs or values of a shared label map (VOC SegmentationObject). Resizes
    and horizontal flips are recorded, not applied to pixels, until :meth:`to_array`.
    """

    def __init__(self, entries: list, *, height: int, width: int, label_map: np.ndarray | None = None):
        self._entries = entries
        self.height, self.width = int(height), int(width)
        # Bitmap sources stay at their source size; these two record what to do with them.
        self._label_map = label_map
        self._flipped = False
        self._transformed = False  # polygons still in the annotation's coordinates

    # --- construction -------------------------------------------------------------------------
    @classmethod
    def from_coco_segmentations(cls, segms: list, *, height: int, width: int) -> InstanceMasks:
        """segms: per instance a list of polygons (each a flat list of xy) or an RLE dict."""
        entries = []
        for segm in segms:
            if isinstance(segm, dict):
                entries.append(_RLE(segm))
            else:
                entries.append(_Polygon([np.asarray(p, dtype=np.float64) for p in segm]))
        return cls(entries, height=height, width=width)

    @classmethod
    def from_label_map(cls, label_map: np.ndarray, values: list[int]) -> InstanceMasks:
        """label_map: (H, W) uint8 where instance k has pixels == values[k] (VOC SegmentationObject)."""
        h, w = label_map.shape
        return cls([_Label(int(v)) for v in values], height=h, width=w, label_map=label_map)

    @classmethod
    def from_bitmaps(cls, masks: np.ndarray) -> InstanceMasks:
        """masks: (N, H, W) uint8/bool bitmaps."""
        n, h, w = masks.shape
        entries = [_RLE(mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))) for m in masks]
        return cls(entries, height=h, width=w)

    def __len__(self) -> int:
        return len(self._entries)

    def select(self, keep) -> InstanceMasks:
        """Keep the instances at the given indices (or boolean mask), in that order."""
        keep = np.asarray(keep)
        if keep.dtype == bool:
            keep = np.nonzero(keep)[0]
        out = InstanceMasks(
            [self._entries[i] for i in keep], height=self.height, width=self.width, label_map=self._label_map
        )
        out._flipped, out._transformed = self._flipped, self._transformed
        return out

    # --- geometry -------------------------------------------------------------------------------
    def resize(self, new_height: int, new_width: int) -> InstanceMasks:
        """Scale to (new_height, new_width): polygons now, bitmaps when materialized."""
        sx, sy = new_width / self.width, new_height / self.height

        def scale(q: np.ndarray) -> None:
            q[0::2] *= sx
            q[1::2] *= sy

        return self._with_polygons(scale, new_height, new_width, flipped=self._flipped)

    def hflip(self) -> InstanceMasks:
        """Mirror left-right: x -> width - x for polygon vertices (pixel-edge coordinates)."""

        def mirror(q: np.ndarray) -> None:
            q[0::2] = self.width - q[0::2]

        return self._with_polygons(mirror, self.height, self.width, flipped=not self._flipped)

    def _with_polygons(self, edit, height: int, width: int, *, flipped: bool) -> InstanceMasks:
        """A transformed copy: ``edit`` changes a copy of every polygon part in place; bitmap entries
        stay at the source size and are brought to (height, width, flipped) when materialized."""
        entries = []
        for e in self._entries:
            if isinstance(e, _Polygon):
                parts = [p.copy() for p in e.parts]
                for q in parts:
                    edit(q)
                entries.append(_Polygon(parts))
            else:
                entries.append(e)
        out = InstanceMasks(entries, height=height, width=width, label_map=self._label_map)
        out._flipped, out._transformed = flipped, True
        return out

    # --- materialization --------------------------------------------------------------------------
    def _fit(self, bitmap: np.ndarray) -> np.ndarray:
        """Bring a source-size bitmap to the current size and orientation."""
        if bitmap.shape != (self.height, self.width):
            # INTER_NEAREST_EXACT samples at pixel centres (plain INTER_NEAREST is shifted by half a pixel).
            bitmap = cv2.resize(bitmap, (self.width, self.height), interpolation=cv2.INTER_NEAREST_EXACT)
        if self._flipped:
            bitmap = cv2.flip(bitmap, 1)
        return bitmap

    @staticmethod
    def _rasterize_in_box(parts: list[np.ndarray], out: np.ndarray) -> None:
        """Rasterize polygons into ``out`` (H, W) through the crop of their integer bounding box."""
        h, w = out.shape
        xs = np.concatenate([p[0::2] for p in parts])
        ys = np.concatenate([p[1::2] for p in parts])
        x0, y0 = max(int(np.floor(xs.min())) - 1, 0), max(int(np.floor(ys.min())) - 1, 0)
        x1, y1 = min(int(np.ceil(xs.max())) + 1, w), min(int(np.ceil(ys.max())) + 1, h)
        if x1 <= x0 or y1 <= y0:
            return  # entirely outside the image
        shifted = []
        for p in parts:
            q = p.copy()
            q[0::2] -= x0
            q[1::2] -= y0
            shifted.append(q.tolist())
        rles = mask_utils.frPyObjects(shifted, y1 - y0, x1 - x0)
        out[y0:y1, x0:x1] = mask_utils.decode(mask_utils.merge(rles))

    def to_array(self) -> np.ndarray:
        """Rasterize all instances at the current size.

        Returns:
            (N, height, width) uint8 in {0, 1}.
        """
        out = np.zeros((len(self._entries), self.height, self.width), dtype=np.uint8)
        label_map = None
        for i, e in enumerate(self._entries):
            if isinstance(e, _Polygon):
                if self._transformed:
                    self._rasterize_in_box(e.parts, out[i])
                else:
                    rles = mask_utils.frPyObjects([p.tolist() for p in e.parts], self.height, self.width)
                    out[i] = mask_utils.decode(mask_utils.merge(rles))
            elif isinstance(e, _RLE):
                rle = e.rle
                if isinstance(rle.get("counts"), list):  # uncompressed counts
                    rle = mask_utils.frPyObjects(rle, *rle["size"])
                out[i] = self._fit(mask_utils.decode(rle))
            else:
                if label_map is None:
                    label_map = self._fit(self._label_map)
                out[i] = label_map == e.value
        return out
