"""The zoo a run learns from: where the zoo of a configuration lives (named by the digest of its
settings), and reusing, resuming or building it — shared by `wspace run` and `wspace compare`."""

from __future__ import annotations

import json
from pathlib import Path

import attrs

from wspace.config import RunConfig
from wspace.experiment.context import Echo
from wspace.files import json_digest
from wspace.training import distributed
from wspace.zoo.lock import LOCK_NAME, lock_alive, read_lock
from wspace_core.registry import WspaceError


def zoo_config_for(config: RunConfig):
    from wspace.zoo.build import zoo_config

    return zoo_config(config.task, config.zoo, config.arch, config.device)


def zoo_path_for(config: RunConfig, zoo_config=None) -> Path:
    """Where the zoo of ``config`` lives: ``out_dir/zoos/<arch>-<task>-<digest of its settings>``."""
    zoo_config = zoo_config_for(config) if zoo_config is None else zoo_config
    settings = {k: v for k, v in attrs.asdict(zoo_config).items() if k != "device"}  # a zoo is the same on any device
    return Path(config.out_dir) / "zoos" / f"{config.arch}-{config.task}-{json_digest(settings)}"


def ensure_zoo(config: RunConfig, echo: Echo, progress=None):
    """The zoo this run learns from: reused when one with the same configuration exists
    under ``out_dir/zoos``, resumed when a build of it was interrupted, built otherwise
    (under torchrun: built by all ranks, each its shard, and merged by rank 0)."""
    from wspace.training.distributed import build_zoo
    from wspace.zoo.store import Zoo

    if config.zoo_path:  # a zoo the user built or imported
        zoo = Zoo.open(config.zoo_path, expect_arch=config.arch)
        if zoo.manifest["task"]["name"] != config.task:
            raise WspaceError(
                f"zoo {config.zoo_path} holds task family {zoo.manifest['task']['name']!r}, not "
                f"{config.task!r}; pass --task {zoo.manifest['task']['name']} or another --zoo"
            )
        echo(f"using zoo {config.zoo_path}")
        return zoo
    zoo_config = zoo_config_for(config)
    path = zoo_path_for(config, zoo_config)
    ctx = distributed.setup(config.device)
    manifest = None
    if ctx.is_main and (path / "manifest.json").exists():
        manifest = json.loads((path / "manifest.json").read_text())
    manifest = distributed.broadcast_object(manifest, ctx)  # under torchrun all take rank 0's branch
    if manifest is not None:
        if manifest.get("status") == "complete":
            echo(f"reusing zoo {path}")
            return Zoo.open(path, expect_arch=config.arch)
        held = (path / LOCK_NAME).exists() and lock_alive(path, LOCK_NAME, read_lock(path)) is not False
        if not held:  # a builder that may be alive: build_zoo names it instead
            echo(f"resuming the interrupted zoo build in {path}")
        return build_zoo(zoo_config, path, resume=True, progress=progress)
    echo(f"building zoo {path} ({zoo_config.num_models} {config.arch} networks on {config.task})")
    return build_zoo(zoo_config, path, resume=False, progress=progress)
