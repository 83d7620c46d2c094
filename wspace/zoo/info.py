"""``zoo_info``: a zoo's status, sizes, splits and per-snapshot performance, read from the
manifest and the metadata alone (never the weights), for a complete zoo or one still building."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from wspace_core.registry import WspaceError
from wspace_core.task import SPLITS
from wspace.zoo.chunks import chunk_dirs, load_chunk_array, read_chunk
from wspace.zoo.directory import inside
from wspace.zoo.files import check_npy, filesystem_errors, safe_file_name
from wspace.zoo.lock import lock_alive, lock_names, read_lock
from wspace.zoo.manifest import MANIFEST_NAME, chunk_models, read_manifest


def _disk_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def _summary(values: np.ndarray) -> dict:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return {"count": 0, "mean": None, "std": None, "min": None, "max": None}
    return {"count": int(values.size), "mean": float(values.mean()), "std": float(values.std()),
            "min": float(values.min()), "max": float(values.max())}


def zoo_info(path: str | os.PathLike) -> dict:
    """Plain-data description of the zoo at ``path`` (what ``wspace zoo info --json`` prints)."""
    path = Path(path)
    with filesystem_errors(path):
        return _zoo_info(path)


def _zoo_info(path: Path) -> dict:
    manifest = read_manifest(path)
    S = manifest["rows_per_model"]
    if manifest["status"] == "complete":
        meta, shapes, committed, models_done = _complete_metadata(path, manifest)
    else:
        meta, shapes, committed, models_done = _building_metadata(path, manifest)
    meta = np.asarray(meta)  # (rows done, C)
    col = {c: meta[:, i] for i, c in enumerate(manifest["metadata_columns"])}
    first = col["snapshot"] == 0
    weights = shapes.get("weights")
    inputs = shapes.get("rollout_inputs")
    out = {
        "path": str(path),
        "status": manifest["status"],
        "format_version": manifest["format_version"],
        "fingerprint": manifest["fingerprint"],
        "architecture": {"name": manifest["architecture"].get("name"),
                         "sizes": manifest["architecture"].get("sizes")},
        "task": {"name": manifest["task"].get("name"), "settings": manifest["task"].get("settings")},
        "chunks": {"committed": len(committed), "total": manifest["num_chunks"],
                   "chunk_size": manifest["chunk_size"]},
        "models": {"done": models_done, "total": manifest["num_models"]},
        "snapshot_steps": manifest["snapshot_steps"],
        "sizes": {
            "rows": int(len(meta)), "rows_total": manifest["num_models"] * S,
            "params_per_network": weights[1] if weights else None,
            "rollouts": inputs[1] if inputs else None,
            "rollout_steps": inputs[2] if inputs else None,
            "bytes_on_disk": _disk_bytes(path),
        },
        "splits": {s: int((col["split"][first] == i).sum()) for i, s in enumerate(SPLITS)},
        "performance": _performance(manifest, col),
        "committed_chunk_ids": _ranges(committed),
        "created": manifest.get("created"),
        "locks": _locks(path),
    }
    build = manifest.get("build") or {}
    if build.get("source") == "published":
        out["source"] = {"published": manifest.get("imported_from"),
                         "restored_bos_rollouts": build.get("restored_bos_rollouts")}
    return out


def _complete_metadata(path: Path, manifest: dict) -> tuple[np.ndarray, dict, list[int], int]:
    """A complete zoo's (memory-mapped) metadata, array shapes, chunk ids and model count."""
    entries = manifest["arrays"]
    if "metadata" not in entries:
        raise WspaceError(f"zoo {path} manifest lists no metadata; re-copy or rebuild the zoo")
    entry = entries["metadata"]
    meta_file = inside(path, path / safe_file_name(entry.get("file"), f"{path / MANIFEST_NAME} (array 'metadata')"))
    check_npy(meta_file, entry.get("dtype"), entry.get("shape"))  # damaged or truncated: a clear error
    meta = np.load(meta_file, mmap_mode="r", allow_pickle=False)
    shapes = {n: e["shape"] for n, e in entries.items()}
    return meta, shapes, list(range(manifest["num_chunks"])), manifest["num_models"]


def _building_metadata(path: Path, manifest: dict) -> tuple[np.ndarray, dict, list[int], int]:
    """The metadata, array shapes, chunk ids and model count of the chunks a building zoo has
    committed so far."""
    parts, committed, models_done, shapes = [], [], 0, {}
    for chunk_id, chunk_dir in chunk_dirs(path).items():
        if chunk_id >= manifest["num_chunks"]:
            continue
        info = read_chunk(chunk_dir, manifest["fingerprint"])
        parts.append(load_chunk_array(chunk_dir, info, "metadata"))
        committed.append(chunk_id)
        models_done += len(chunk_models(chunk_id, manifest["num_models"], manifest["chunk_size"]))
        if not shapes:
            shapes = {n: e["shape"] for n, e in info["arrays"].items()}
    meta = np.concatenate(parts) if parts else np.zeros((0, len(manifest["metadata_columns"])))
    return meta, shapes, committed, models_done


def _performance(manifest: dict, col: dict[str, np.ndarray]) -> dict | None:
    """The first metric's summary per split ("all" first) and snapshot; None without it."""
    metric = (manifest["task"].get("metric_columns") or [None])[0]
    if metric not in col:
        return None
    performance = {"metric": metric, "by_split": {}}
    for i, split in enumerate(["all", *SPLITS]):
        in_split = np.ones(len(col[metric]), bool) if split == "all" else col["split"] == i - 1
        if split != "all" and not in_split.any():
            continue
        performance["by_split"][split] = [
            {"snapshot": s, "step": manifest["snapshot_steps"][s],
             **_summary(col[metric][in_split & (col["snapshot"] == s)])} for s in range(manifest["rows_per_model"])]
    return performance


def _locks(path: Path) -> list[dict]:
    """The holders of the zoo's lock files, and whether each is running."""
    locks = []
    for name in lock_names(path):
        holder = read_lock(path, name)
        if holder is not None:
            locks.append({"file": name, "pid": holder.get("pid"), "host": holder.get("host"),
                          "since": holder.get("since"), "alive": lock_alive(path, name, holder)})
    return locks


def _ranges(ids: list[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> "0-2, 5, 7-8"."""
    parts, ids = [], sorted(ids)
    i = 0
    while i < len(ids):
        j = i
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        parts.append(str(ids[i]) if i == j else f"{ids[i]}-{ids[j]}")
        i = j + 1
    return ", ".join(parts)


def format_info(info: dict) -> str:
    """Human-readable text of ``zoo_info``."""
    arch, task, sizes = info["architecture"], info["task"], info["sizes"]
    lines = [f"zoo {info['path']}",
             f"  status        {info['status']}",
             f"  architecture  {arch['name']} {_sizes(arch.get('sizes'))}",
             f"  task          {task['name']}",
             f"  chunks        {info['chunks']['committed']} of {info['chunks']['total']} committed "
             f"({info['chunks']['chunk_size']} models each)"
             + (f": {info['committed_chunk_ids']}" if info["status"] == "building" and info["committed_chunk_ids"] else ""),
             f"  models        {info['models']['done']} of {info['models']['total']}",
             f"  rows          {sizes['rows']} of {sizes['rows_total']} "
             f"({len(info['snapshot_steps'])} snapshots at steps {info['snapshot_steps']})",
             f"  parameters    {sizes['params_per_network']} per network",
             f"  rollouts      {sizes['rollouts']} per snapshot, {sizes['rollout_steps']} steps",
             f"  on disk       {_bytes(sizes['bytes_on_disk'])}",
             "  splits        " + ", ".join(f"{s} {n}" for s, n in info["splits"].items()) + " models"]
    source = info.get("source")
    if source:
        restored = source.get("restored_bos_rollouts")
        lines.append(f"  imported from {source.get('published')} (published layout)")
        if restored is not None:
            lines.append(f"  restored BOS  {restored} rollouts (the published accept_sequence had written EOS "
                         f"over their BOS)")
    for lock in info.get("locks", []):
        state = {True: "running", False: "not running (stale lock)", None: "on another host"}[lock["alive"]]
        lines.append(f"  lock          {lock['file']}: pid {lock['pid']} on {lock['host']} "
                     f"since {lock['since']}, {state}")
    perf = info.get("performance")
    if perf:
        lines.append(f"  {perf['metric']} per snapshot (mean ± std [min, max]):")
        for split, per_snapshot in perf["by_split"].items():
            lines.append(f"    {split}:")
            for row in per_snapshot:
                if row["count"]:
                    lines.append(f"      step {row['step']:>6}: {row['mean']:.4f} ± {row['std']:.4f} "
                                 f"[{row['min']:.4f}, {row['max']:.4f}]  (n={row['count']})")
                else:
                    lines.append(f"      step {row['step']:>6}: no models yet")
    return "\n".join(line.rstrip() for line in lines)


def _sizes(sizes: dict | None) -> str:
    if not sizes:
        return ""
    return (f"(input {sizes.get('input_size')}, hidden {sizes.get('hidden_size')}, "
            f"output {sizes.get('output_size')}, layers {sizes.get('num_layers')})")


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
