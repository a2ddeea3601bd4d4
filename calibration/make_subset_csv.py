"""Draw a calibration (or evaluation) subset from your own labelled data as a labels CSV.

    python calibration/make_subset_csv.py /data/imagenet/train --size 300 --seed 0 --out calib.csv

Picks `--size` images class-balanced (round robin over classes, so 300 images from ImageNet's 1,000
classes take one image from each of 300 classes) with a fixed seed, and writes `file,label` rows with
paths relative to the CSV. Use the CSV anywhere edgevision takes data: `--data calib.csv`.
"""
from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

from edgevision.data import balanced_indices, open_source


def write_subset_csv(data: str, size: int, seed: int, out: Path) -> int:
    source = open_source(data)
    if source.labels is None or not hasattr(source, "files"):
        raise SystemExit(f"{data} is not a labelled folder or CSV of files")
    picked = balanced_indices(len(source), size, source.labels, seed)
    out = out.resolve()
    with open(out, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "label"])
        for i in picked:
            writer.writerow([os.path.relpath(source.files[i], out.parent), int(source.labels[i])])
    return len(picked)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", help="an ImageFolder (class subfolders) or a labels CSV")
    ap.add_argument("--size", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    n = write_subset_csv(args.data, args.size, args.seed, args.out)
    print(f"wrote {n} images to {args.out}")


if __name__ == "__main__":
    main()
