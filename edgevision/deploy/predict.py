"""Classify image files with the model select_model.py picked, and the bundle's preprocessing.

    python predict.py IMAGE [IMAGE ...] [--top K] [--bundle DIR] [--json]

Needs Python, numpy, Pillow and the pick's runtime. The few lines to embed in an application are
`classify()` below: read the manifest and decision once, then preprocess and run.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

if __package__:
    from . import bundle_lib as lib
else:  # run as a script inside the bundle
    import bundle_lib as lib


def load_pick(bundle: Path, threads: int | None = None):
    """(runner, manifest) of the bundle's pick; a BundleError when select_model.py has not picked one."""
    bundle = Path(bundle)
    manifest = lib.load_manifest(bundle)
    if not (bundle / lib.DECISION_FILE).is_file():
        raise lib.BundleError("no decision.json: no model picked on this machine yet", "run python select_model.py first")
    decision = lib.load_decision(bundle)
    if not decision.picked:
        raise lib.BundleError("select_model.py found no candidate within the accuracy budget here",
                              "see decision.json, or run it again with --max-drop")
    chosen = next(c for c in manifest.candidates if c.key == decision.picked)
    pick = lib.Candidate(chosen.key, chosen.runtime, chosen.precision, {f: "" for f in decision.files},
                         decision.options)
    return lib.load_runner(bundle, pick, threads or decision.device.threads), manifest


def classify(runner, manifest: lib.BundleManifest, image: Path, top: int = 5) -> list[dict]:
    """Top-k of one image: [{"index", "class", "probability"}]."""
    probs = lib.softmax(runner(lib.load_image(image, manifest.preprocessing)).astype(np.float64))[0]
    best = np.argsort(-probs)[:top]
    names = manifest.classes or []
    return [{"index": int(i), "class": names[i] if i < len(names) else str(int(i)), "probability": float(probs[i])}
            for i in best]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("images", nargs="+")
    parser.add_argument("--top", type=int, default=5)
    parser.add_argument("--bundle", default=str(Path(__file__).resolve().parent))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    try:
        runner, manifest = load_pick(Path(args.bundle), args.threads)
        results = {image: classify(runner, manifest, Path(image), args.top) for image in args.images}
    except lib.BundleError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for image, top in results.items():
            print(f"{image}: " + ", ".join(f"{t['class']} {t['probability']:.3f}" for t in top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
