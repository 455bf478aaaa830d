"""Write the synthetic shapes dataset (train and val splits) as COCO or VOC files.

    python tools/make_synthetic.py --out datasets/synthetic --format coco --num-images 400 --seed 0
    python tools/make_synthetic.py --out datasets/synthetic_voc --format voc --num-images 400 --seed 0
    python tools/make_synthetic.py --out datasets/synthetic_simple --scene simple   # the demo's scenes

Layouts (see maskrcnn/data/synthetic.py):
    coco: OUT/{train,val}/*.jpg and OUT/annotations/instances_{train,val}.json
    voc:  OUT/{JPEGImages,Annotations,SegmentationObject,SegmentationClass}/ and
          OUT/ImageSets/{Main,Segmentation}/{train,val,trainval}.txt
The same seed writes the same images and annotations.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time

from maskrcnn.data.base import area_bucket
from maskrcnn.data.synthetic import CLASS_NAMES, SCENE_DEFAULTS, SCENES, make_synthetic


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder (created)")
    parser.add_argument("--format", choices=("coco", "voc"), default="coco")
    parser.add_argument("--num-images", type=int, default=400, help="training images (default 400)")
    parser.add_argument("--num-val", type=int, default=None, help="validation images (default num-images // 5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=256, help="long side of the images in pixels")
    parser.add_argument(
        "--scene",
        choices=SCENES,
        default="standard",
        help="standard: rotated shapes, textured backgrounds, all sizes, occlusion; "
        "intermediate: rotated shapes, faint texture, all sizes (small from ~20 px), some occlusion; "
        "simple: upright shapes on plain backgrounds, medium/large, little occlusion",
    )
    defaults = ", ".join(f"{k} {v[0]}" for k, v in SCENE_DEFAULTS.items())
    parser.add_argument(
        "--max-objects",
        type=int,
        default=None,
        help=f"shapes per image are drawn from 1..N (default by scene: {defaults})",
    )
    defaults = ", ".join(f"{k} {v[1]}" for k, v in SCENE_DEFAULTS.items())
    parser.add_argument(
        "--min-visible",
        type=float,
        default=None,
        help=f"least fraction of an object left visible by the shapes drawn over it (default by scene: {defaults})",
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    result = make_synthetic(
        out=args.out,
        format=args.format,
        num_images=args.num_images,
        num_val=args.num_val,
        seed=args.seed,
        image_size=args.image_size,
        scene=args.scene,
        max_objects=args.max_objects,
        min_visible=args.min_visible,
    )
    for split, samples in result.items():
        counts = collections.Counter(CLASS_NAMES[int(label) - 1] for s in samples for label in s.labels)
        sizes = collections.Counter(area_bucket(m.sum()) for s in samples for m in s.masks)
        print(
            f"{split}: {len(samples)} images, {sum(counts.values())} objects, classes {dict(counts)}, "
            f"sizes {dict(sizes)}"
        )
    print(f"wrote {args.format} dataset to {args.out} in {time.perf_counter() - start:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
