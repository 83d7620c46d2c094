"""Merging zoo shards: zoos of one build (same fingerprint) holding disjoint chunks, e.g. built by
the ranks of a multi-machine job, combined into the zoo a single build would have written.

A multi-machine build writes shard r of W into its own directory with
``ZooWriter.create(shard_dir, manifest, resume, shard=(r, W))``: it builds the chunks with
``chunk_id % W == r`` and leaves the shard "building". ``merge_zoos(shard_dirs, out)`` then copies
every committed chunk (checksums verified) into ``out`` through the ordinary writer and
finalizes it, so the merged arrays are byte-identical to a single build's. ``out`` may be one of
the shards (merging in place), and an interrupted merge resumes when run again.
"""

from __future__ import annotations

import os
from pathlib import Path

from wspace_core.registry import WspaceError
from wspace.zoo.chunks import chunk_dirs, load_chunk_array, read_chunk
from wspace.zoo.directory import check_claimable
from wspace.zoo.manifest import ARRAY_NAMES, MANIFEST_NAME, chunk_models, diff_keys, read_manifest
from wspace.zoo.store import Zoo, ZooWriter


def _same(p: Path, q: Path) -> bool:
    try:
        return p.resolve() == q.resolve()
    except OSError:
        return False


def merge_zoos(sources: list[str | os.PathLike], out: str | os.PathLike) -> Zoo:
    """Merge the committed chunks of ``sources`` (building or complete zoos of one build) into
    ``out`` and finalize it. Refuses different builds, overlapping chunks, damaged chunks, and
    leaves ``out`` resumable (listing what is missing) when the sources do not cover every chunk."""
    sources = [Path(s) for s in sources]
    out = Path(out)
    if not sources:
        raise WspaceError("merge needs at least one source zoo")
    if len({s.resolve() for s in sources}) != len(sources):
        raise WspaceError("a source zoo is listed twice; list each shard once")
    check_claimable(out, MANIFEST_NAME)  # before any work: --out must be new, empty or a zoo
    manifests = [read_manifest(s) for s in sources]
    first = manifests[0]
    for src, manifest in zip(sources[1:], manifests[1:]):
        if manifest["fingerprint"] != first["fingerprint"]:
            keys = ("architecture", "task", "build")
            differing = diff_keys({k: first.get(k) for k in keys}, {k: manifest.get(k) for k in keys})
            raise WspaceError(f"{src} and {sources[0]} come from different builds (fingerprints "
                              f"{manifest['fingerprint'][:12]} vs {first['fingerprint'][:12]}; differing: "
                              f"{', '.join(differing[:8])}); only shards of one build merge")

    # chunk id -> (source, where to read it)
    owner: dict[int, tuple[Path, object]] = {}
    num_models, chunk_size = first["num_models"], first["chunk_size"]
    for src, manifest in zip(sources, manifests):
        if manifest["status"] == "complete":
            zoo = Zoo.open(src, verify=True)
            held = {c: zoo for c in range(manifest["num_chunks"])}
        else:
            held = {c: d for c, d in chunk_dirs(src).items() if c < manifest["num_chunks"]}
        for chunk_id, where in held.items():
            if chunk_id in owner:
                models = chunk_models(chunk_id, num_models, chunk_size)
                raise WspaceError(f"{owner[chunk_id][0]} and {src} both hold chunk {chunk_id} (models "
                                  f"{models.start}..{models.stop - 1}); shards must hold disjoint models: "
                                  f"leave one of them out")
            owner[chunk_id] = (src, where)

    target_is_source = any(_same(s, out) for s in sources)
    if not target_is_source and (out / MANIFEST_NAME).exists():
        existing = read_manifest(out)
        if existing["status"] == "complete":
            raise WspaceError(f"{out} already holds a complete zoo; merge into another --out")
    with ZooWriter.create(out, first, resume=True) as writer:
        have = writer.committed_chunks()
        for chunk_id in sorted(owner):
            src, where = owner[chunk_id]
            if chunk_id in have:
                if not (target_is_source and _same(src, out)):
                    _check_identical(out, src, chunk_id, where, writer.fingerprint)
                continue
            writer.commit_chunk(chunk_id, _chunk_arrays(chunk_id, where, writer, first["fingerprint"]))
        missing = [c for c in range(writer.num_chunks) if c not in writer.committed_chunks()]
        if missing:
            listing = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
            raise WspaceError(f"merged {writer.num_chunks - len(missing)} of {writer.num_chunks} chunks "
                              f"into {out}; chunks {listing} are in none of the sources. Build them "
                              f"(finish the missing shards with --resume) and merge again; {out} keeps "
                              f"what is merged so far")
        return writer.finalize()


def _chunk_arrays(chunk_id: int, where, writer: ZooWriter, fingerprint: str) -> dict:
    if isinstance(where, Zoo):
        models = writer.chunk_models(chunk_id)
        S = writer.rows_per_model
        rows = slice(models.start * S, models.stop * S)
        return {"weights": where.weights[rows], "rollout_inputs": where.rollout_inputs[rows],
                "rollout_outputs": where.rollout_outputs[rows],
                "metadata": where._arrays["metadata"][rows]}
    info = read_chunk(where, fingerprint, verify=True)
    return {name: load_chunk_array(where, info, name) for name in ARRAY_NAMES}


def _check_identical(out: Path, src: Path, chunk_id: int, where, fingerprint: str) -> None:
    """A chunk already in ``out`` (from an interrupted merge) must be the source's chunk."""
    if isinstance(where, Zoo):
        return  # a complete source's chunks are sliced; its checksums were verified on open
    ours = read_chunk(chunk_dirs(out)[chunk_id], fingerprint, verify=True)
    theirs = read_chunk(where, fingerprint)
    if any(ours["arrays"][n]["sha256"] != theirs["arrays"][n]["sha256"] for n in ARRAY_NAMES):
        raise WspaceError(f"chunk {chunk_id} in {out} differs from the one in {src}; they were built "
                          f"differently. Delete {out} and merge again")
