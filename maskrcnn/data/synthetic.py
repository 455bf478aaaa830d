"""The synthetic shapes dataset: ellipses, rectangles and triangles with exact instance masks,
written as real COCO or VOC files.

Three scene styles:
    standard: rotated shapes over textured backgrounds (blotches, faint lines), all COCO sizes
        (~25% small), up to 6 objects, occlusion down to 40% visible: the dataset for tests and
        RoI-layer ablations, where small objects and occlusion separate the RoI layers.
    intermediate: rotated shapes over faintly blotched backgrounds (no lines), all COCO sizes
        (~25% small, but no side under about 20 px), up to 4 objects, at least 70% visible: the
        RoI-layer studies of docs/results.md, where a small model learns to 30+ AP in CPU minutes
        and small objects remain.
    simple: upright shapes (axis-aligned ellipses and rectangles, apex-up triangles) over a plain
        background with pixel noise, medium and large only, up to 4 objects, at least 80% visible:
        the quick demo, learnable from random init in a few CPU minutes.

Every shape is a polygon rasterized by pycocotools, so the mask of an unoccluded object is exactly
its polygon's rasterization and the COCO file can store the polygon; an occluded object stores an
RLE of its visible pixels (compressed or uncompressed counts, alternately). Image pixels are
painted through the masks, so masks and pixels agree before JPEG compression; the masks stay exact
after it (only pixels change).

Layouts (``DIR`` = ``--out``):
    coco: DIR/train/*.jpg, DIR/val/*.jpg, DIR/annotations/instances_{train,val}.json
    voc:  DIR/JPEGImages/*.jpg, DIR/Annotations/*.xml, DIR/SegmentationObject/*.png,
          DIR/SegmentationClass/*.png, DIR/ImageSets/{Main,Segmentation}/{train,val,trainval}.txt
    Image names are ``<split>_<index:06d>``; COCO image ids are 1.. within each split.
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import cv2
import numpy as np
import pycocotools.mask as mask_utils

CLASS_NAMES = ["ellipse", "rectangle", "triangle"]
SPLITS = ("train", "val")
SCENES = ("standard", "intermediate", "simple")
# Per scene: (max_objects, min_visible) used when the caller passes None.
SCENE_DEFAULTS = {"standard": (6, 0.4), "intermediate": (4, 0.7), "simple": (4, 0.8)}


@dataclass
class SyntheticSample:
    """One generated image and its exact ground truth."""

    name: str  # file stem, e.g. "train_000003"
    image: np.ndarray  # (H, W, 3) uint8 RGB, before JPEG compression
    masks: np.ndarray  # (N, H, W) uint8 visible pixels of each object
    labels: np.ndarray  # (N,) int64 in 1..3 (index into CLASS_NAMES + 1)
    boxes: np.ndarray  # (N, 4) float32 XYXY 0-based pixel edges, tight around the visible mask
    polygons: list = field(default_factory=list)  # per object: flat xy polygon if unoccluded, else None


# --- shapes ------------------------------------------------------------------------------------


def _shape_polygon(
    rng: np.random.Generator, kind: int, cx: float, cy: float, area: float, upright: bool = False
) -> np.ndarray:
    """(K, 2) vertices of a shape of about ``area`` pixels centred at (cx, cy); ``upright``: no
    rotation and an undisturbed apex-up triangle."""
    aspect = rng.uniform(0.6, 1.6)
    theta = 0.0 if upright else rng.uniform(0, np.pi)
    if kind == 1:  # ellipse
        a, b = np.sqrt(area * aspect / np.pi), np.sqrt(area / (aspect * np.pi))
        t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
        pts = np.stack([a * np.cos(t), b * np.sin(t)], axis=1)
    elif kind == 2:  # rectangle
        w, h = np.sqrt(area * aspect), np.sqrt(area / aspect)
        pts = np.array([[-w, -h], [w, -h], [w, h], [-w, h]]) / 2
    else:  # triangle, not too thin: vertex angles 120 degrees apart, jittered
        r = np.sqrt(4 * area / (3 * np.sqrt(3)))
        t = np.array([0, 2 * np.pi / 3, 4 * np.pi / 3])
        # upright: apex up (image y grows downwards); otherwise jittered vertices, rotated below
        t = t - np.pi / 2 if upright else t + rng.uniform(-0.3, 0.3, size=3)
        pts = np.stack([r * np.cos(t) * np.sqrt(aspect), r * np.sin(t) / np.sqrt(aspect)], axis=1)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    return pts @ rot.T + np.array([cx, cy])


def _rasterize(poly: list[float], height: int, width: int) -> np.ndarray:
    rle = mask_utils.frPyObjects([poly], height, width)
    return mask_utils.decode(mask_utils.merge(rle))


def _sample_area(rng: np.random.Generator, height: int, width: int, scene: str = "standard") -> float:
    """Object area in pixels. standard: ~25% small (< 32^2), ~40% medium, ~35% large (>= 96^2);
    occlusion and the image border make the kept large ones fewer. intermediate: the same shares,
    small ones from 20^2 up (standard's go down to about 14^2). simple: log-uniform from 40^2 to a
    sixth of the image (medium and large)."""
    if scene == "simple":
        lo, hi = 40**2, max(60**2, height * width / 6)
    else:
        u = rng.random()
        big = max(96**2 * 1.2, 0.25 * height * width)
        small = (400, 900) if scene == "intermediate" else (200, 900)
        lo, hi = small if u < 0.25 else (1300, 8500) if u < 0.65 else (96**2 * 1.05, big)
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _background(rng: np.random.Generator, height: int, width: int, scene: str = "standard") -> np.ndarray:
    """Muted base colour; standard scenes add low-frequency blotches and a few faint lines:
    texture, not objects; intermediate scenes fainter blotches only."""
    base = rng.uniform(60, 190, size=3)
    if scene == "simple":
        return np.full((height, width, 3), base)
    blotch = cv2.resize(
        rng.normal(0, 12 if scene == "intermediate" else 22, size=(height // 32 + 2, width // 32 + 2, 3)).astype(
            np.float32
        ),
        (width, height),
        interpolation=cv2.INTER_CUBIC,
    )
    img = base + blotch
    for _ in range(rng.integers(0, 4) if scene == "standard" else 0):
        p = rng.uniform(0, [width, height, width, height]).astype(int)
        cv2.line(
            img, (int(p[0]), int(p[1])), (int(p[2]), int(p[3])), tuple(float(v) for v in base + rng.normal(0, 20, 3)), 1
        )
    return img


def _object_colour(rng: np.random.Generator, background_mean: np.ndarray) -> np.ndarray:
    for _ in range(50):
        c = rng.uniform(0, 255, size=3)
        if np.abs(c - background_mean).sum() > 150:
            return c
    return 255 - background_mean


def _check_scene(scene: str, max_objects: int | None, min_visible: float | None) -> tuple[int, float]:
    """The scene's defaults for the knobs left None, after checking all three."""
    if scene not in SCENES:
        raise ValueError(f"scene must be one of {SCENES}, got {scene!r}")
    default_objects, default_visible = SCENE_DEFAULTS[scene]
    max_objects = default_objects if max_objects is None else max_objects
    min_visible = default_visible if min_visible is None else min_visible
    if max_objects < 1:
        raise ValueError(f"max_objects must be at least 1, got {max_objects}")
    if not 0.0 < min_visible <= 1.0:
        raise ValueError(f"min_visible must be in (0, 1], got {min_visible}")
    return max_objects, min_visible


def generate_sample(
    rng: np.random.Generator,
    *,
    height: int,
    width: int,
    name: str,
    scene: str = "standard",
    max_objects: int | None = None,
    min_visible: float | None = None,
) -> SyntheticSample:
    """Draw one image with 1..max_objects shapes; later shapes occlude earlier ones, but every
    object keeps at least ``min_visible`` of its in-image area (otherwise the new shape is redrawn).
    ``max_objects`` / ``min_visible`` default to the scene's (SCENE_DEFAULTS)."""
    max_objects, min_visible = _check_scene(scene, max_objects, min_visible)
    upright = scene == "simple"
    img = _background(rng, height, width, scene)
    bg_mean = img.reshape(-1, 3).mean(axis=0)
    full, visible, labels, polys = [], [], [], []
    n_target = int(rng.integers(1, max_objects + 1))
    for _ in range(n_target):
        for _attempt in range(20):
            kind = int(rng.integers(1, len(CLASS_NAMES) + 1))
            area = _sample_area(rng, height, width, scene)
            cx, cy = rng.uniform(0.05, 0.95) * width, rng.uniform(0.05, 0.95) * height
            poly = np.round(_shape_polygon(rng, kind, cx, cy, area, upright), 2).reshape(-1).tolist()
            m = _rasterize(poly, height, width)
            if m.sum() < 0.6 * area or m.sum() < 100:  # mostly outside the image
                continue
            if all((v & (1 - m)).sum() >= min_visible * f.sum() for v, f in zip(visible, full)):
                break
        else:
            continue
        visible = [v & (1 - m) for v in visible]
        full.append(m)
        visible.append(m.copy())
        labels.append(kind)
        polys.append(poly)
        colour = _object_colour(rng, bg_mean)
        shade = cv2.GaussianBlur(rng.normal(0, 10, size=(height, width, 1)).astype(np.float32), (0, 0), 3)
        img = np.where(m[..., None].astype(bool), colour + shade.reshape(height, width, 1), img)
    img = img + rng.normal(0, 6, size=img.shape)
    image = np.clip(img, 0, 255).astype(np.uint8)

    masks = np.stack(visible).astype(np.uint8) if visible else np.zeros((0, height, width), np.uint8)
    boxes = np.zeros((len(visible), 4), dtype=np.float32)
    for i, v in enumerate(masks):
        ys, xs = np.nonzero(v)
        boxes[i] = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    polygons = [p if np.array_equal(v, f) else None for p, v, f in zip(polys, visible, full)]
    return SyntheticSample(
        name=name, image=image, masks=masks, labels=np.array(labels, dtype=np.int64), boxes=boxes, polygons=polygons
    )


def generate_split(
    *,
    split: str,
    num_images: int,
    seed: int,
    image_size: int = 256,
    scene: str = "standard",
    max_objects: int | None = None,
    min_visible: float | None = None,
) -> list[SyntheticSample]:
    """``num_images`` samples; image i depends only on (seed, split, i), so a longer split extends
    a shorter one. Sizes vary: square, landscape (3:4) and portrait (4:3) of long side image_size."""
    split_id = SPLITS.index(split)
    short = int(round(image_size * 0.75))
    shapes = [(image_size, image_size), (short, image_size), (image_size, short)]
    samples = []
    for i in range(num_images):
        rng = np.random.default_rng([seed, split_id, i])
        h, w = shapes[int(rng.integers(len(shapes)))]
        samples.append(
            generate_sample(
                rng,
                height=h,
                width=w,
                name=f"{split}_{i:06d}",
                scene=scene,
                max_objects=max_objects,
                min_visible=min_visible,
            )
        )
    return samples


# --- writers -------------------------------------------------------------------------------------


def _write_jpeg(path: str, image_rgb: np.ndarray) -> None:
    if not cv2.imwrite(path, cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95]):
        raise OSError(f"cannot write {path}")


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO RLE with a plain list of counts (column-major runs, starting with zeros)."""
    flat = np.asarray(mask, dtype=np.uint8).flatten(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0] == 1:
        counts = [0] + counts
    return {"size": list(mask.shape), "counts": counts}


def write_coco(samples: list[SyntheticSample], out_dir: str, split: str) -> str:
    """Write ``out_dir/<split>/*.jpg`` and ``out_dir/annotations/instances_<split>.json``."""
    os.makedirs(os.path.join(out_dir, split), exist_ok=True)
    os.makedirs(os.path.join(out_dir, "annotations"), exist_ok=True)
    images, annotations, n_rle = [], [], 0
    for image_id, s in enumerate(samples, start=1):
        file_name = f"{s.name}.jpg"
        _write_jpeg(os.path.join(out_dir, split, file_name), s.image)
        h, w = s.image.shape[:2]
        images.append({"id": image_id, "file_name": file_name, "height": h, "width": w})
        for m, label, box, poly in zip(s.masks, s.labels, s.boxes, s.polygons):
            if poly is not None:
                segm = [poly]
            else:
                n_rle += 1
                if n_rle % 2:
                    segm = mask_utils.encode(np.asfortranarray(m))
                    segm["counts"] = segm["counts"].decode("ascii")
                else:
                    segm = uncompressed_rle(m)
            x1, y1, x2, y2 = (float(v) for v in box)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(label),
                    "segmentation": segm,
                    "area": float(m.sum()),
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "iscrowd": 0,
                }
            )
    categories = [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(CLASS_NAMES)]
    path = os.path.join(out_dir, "annotations", f"instances_{split}.json")
    with open(path, "w") as f:
        json.dump(
            {
                "info": {"description": "maskrcnn synthetic shapes"},
                "images": images,
                "annotations": annotations,
                "categories": categories,
            },
            f,
        )
    return path


def voc_palette() -> list[int]:
    """PASCAL VOC's colour map (256 RGB triples, flattened), as in the devkit's labelcolormap."""
    palette = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


def write_palette_png(path: str, indices: np.ndarray) -> None:
    from PIL import Image

    im = Image.fromarray(indices.astype(np.uint8), mode="P")
    im.putpalette(voc_palette())
    im.save(path)


def write_voc(samples: list[SyntheticSample], out_dir: str, split: str) -> None:
    """Write one split into the VOCdevkit-style folder ``out_dir`` (XML boxes are 1-based inclusive:
    xmin = x1 + 1, xmax = x2 for our 0-based pixel-edge box (x1, x2))."""
    for sub in (
        "JPEGImages",
        "Annotations",
        "SegmentationObject",
        "SegmentationClass",
        "ImageSets/Main",
        "ImageSets/Segmentation",
    ):
        os.makedirs(os.path.join(out_dir, sub), exist_ok=True)
    for s in samples:
        h, w = s.image.shape[:2]
        _write_jpeg(os.path.join(out_dir, "JPEGImages", f"{s.name}.jpg"), s.image)
        root = ET.Element("annotation")
        ET.SubElement(root, "folder").text = "synthetic"
        ET.SubElement(root, "filename").text = f"{s.name}.jpg"
        size = ET.SubElement(root, "size")
        for k, v in (("width", w), ("height", h), ("depth", 3)):
            ET.SubElement(size, k).text = str(v)
        ET.SubElement(root, "segmented").text = "1"
        for label, box in zip(s.labels, s.boxes):
            obj = ET.SubElement(root, "object")
            ET.SubElement(obj, "name").text = CLASS_NAMES[label - 1]
            ET.SubElement(obj, "truncated").text = "0"
            ET.SubElement(obj, "difficult").text = "0"
            bb = ET.SubElement(obj, "bndbox")
            x1, y1, x2, y2 = (int(v) for v in box)
            for k, v in (("xmin", x1 + 1), ("ymin", y1 + 1), ("xmax", x2), ("ymax", y2)):
                ET.SubElement(bb, k).text = str(v)
        ET.ElementTree(root).write(os.path.join(out_dir, "Annotations", f"{s.name}.xml"))
        inst = np.zeros((h, w), np.uint8)
        cls = np.zeros((h, w), np.uint8)
        for k, (m, label) in enumerate(zip(s.masks, s.labels), start=1):
            inst[m.astype(bool)] = k
            cls[m.astype(bool)] = label
        write_palette_png(os.path.join(out_dir, "SegmentationObject", f"{s.name}.png"), inst)
        write_palette_png(os.path.join(out_dir, "SegmentationClass", f"{s.name}.png"), cls)
    for sets in ("Main", "Segmentation"):
        with open(os.path.join(out_dir, "ImageSets", sets, f"{split}.txt"), "w") as f:
            f.writelines(f"{s.name}\n" for s in samples)


def make_synthetic(
    *,
    out: str,
    format: str,
    num_images: int,
    num_val: int | None = None,
    seed: int = 0,
    image_size: int = 256,
    scene: str = "standard",
    max_objects: int | None = None,
    min_visible: float | None = None,
) -> dict[str, list[SyntheticSample]]:
    """Generate and write the train and val splits; returns the in-memory ground truth per split."""
    if format not in ("coco", "voc"):
        raise ValueError(f"format must be 'coco' or 'voc', got {format!r}")
    if num_images <= 0:
        raise ValueError(f"num_images must be positive, got {num_images}")
    if image_size < 64:
        raise ValueError(f"image_size must be at least 64 pixels, got {image_size}")
    num_val = max(1, num_images // 5) if num_val is None else num_val
    result = {}
    for split, n in (("train", num_images), ("val", num_val)):
        samples = generate_split(
            split=split,
            num_images=n,
            seed=seed,
            image_size=image_size,
            scene=scene,
            max_objects=max_objects,
            min_visible=min_visible,
        )
        (write_coco if format == "coco" else write_voc)(samples, out, split)
        result[split] = samples
    if format == "voc":
        for sets in ("Main", "Segmentation"):
            with open(os.path.join(out, "ImageSets", sets, "trainval.txt"), "w") as f:
                f.writelines(f"{s.name}\n" for split in SPLITS for s in result[split])
    return result
