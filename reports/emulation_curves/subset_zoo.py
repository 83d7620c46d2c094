"""A zoo holding part of another zoo (issue #13's zoo-size experiments): at most ``--per-language``
networks of each task (the first ones, in model order) and the snapshots at ``--keep-steps``
(default: all). Every network keeps its split, so curves on the subset score the same validation
languages as curves on the whole zoo. Only for measuring what a smaller zoo would give; the
subset is written as a complete zoo that ``Zoo.open`` checks like any other.

    python reports/emulation_curves/subset_zoo.py ZOO512 OUT --per-language 1 --keep-steps 0,150,375,750,1500
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np

from wspace.zoo.manifest import CHECKSUM_KEY, MANIFEST_NAME, manifest_checksum
from wspace.zoo.store import Zoo


def subset(src: Path, out: Path, per_language: int, keep_steps: set[int] | None) -> Zoo:
    zoo = Zoo.open(src)
    manifest = json.loads((src / MANIFEST_NAME).read_text())
    family = zoo.task_family()
    meta, S = zoo.metadata, zoo.rows_per_model
    first = zoo.rows(snapshot=0)  # one row per network
    tasks = np.stack([meta[c][first] for c in family.task_columns], axis=1)  # (M, K)
    kept_models, seen = [], {}
    for model, task in enumerate(map(tuple, tasks)):
        if seen.get(task, 0) < per_language:
            kept_models.append(model)
            seen[task] = seen.get(task, 0) + 1
    snaps = [i for i, step in enumerate(zoo.snapshot_steps) if keep_steps is None or step in keep_steps]
    rows = np.array([m * S + s for m in kept_models for s in snaps])  # (models x snapshots,)
    out.mkdir(parents=True)
    manifest.update(num_models=len(kept_models), rows_per_model=len(snaps), num_chunks=1,
                    chunk_size=len(kept_models), snapshot_steps=[zoo.snapshot_steps[i] for i in snaps])
    columns = zoo.metadata_columns
    for name, entry in manifest["arrays"].items():
        array = np.asarray(np.load(src / entry["file"], mmap_mode="r")[rows])
        if name == "metadata":  # renumber models and snapshots as the manifest now says
            array[:, columns.index("model")] = np.repeat(np.arange(len(kept_models)), len(snaps))
            array[:, columns.index("snapshot")] = np.tile(np.arange(len(snaps)), len(kept_models))
        np.save(out / entry["file"], array)
        entry.update(shape=list(array.shape), bytes=(out / entry["file"]).stat().st_size,
                     sha256=hashlib.sha256((out / entry["file"]).read_bytes()).hexdigest())
    manifest[CHECKSUM_KEY] = manifest_checksum(manifest)
    (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1))
    return Zoo.open(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("out", type=Path, help="a new directory")
    ap.add_argument("--per-language", type=int, default=1, help="networks of each task kept (default 1)")
    ap.add_argument("--keep-steps", default=None, help="snapshot steps kept, comma-separated (default: all)")
    args = ap.parse_args()
    keep = None if args.keep_steps is None else {int(s) for s in args.keep_steps.split(",")}
    zoo = subset(args.src, args.out, args.per_language, keep)
    splits = np.bincount(zoo.metadata["split"][zoo.rows(snapshot=0)].astype(int), minlength=3)
    print(f"{zoo}: snapshots at {zoo.snapshot_steps}; networks per split (train, validation, ood) {splits.tolist()}")


if __name__ == "__main__":
    main()
