"""A model's codes of a test split, kept on disk under <home>/cache/codes/.

A shared server keeps a few models' codes in memory; a class switching among all two dozen models
made it encode the same test split again and again (the U-Net: 9 s of a core for MNIST's 10,000
images; the hypernetwork CNNs 1.5 s). On disk they cost 0.1-10 MB a model and read back in
milliseconds, so each model's codes are computed once per machine, not once per cache eviction or
server start. An entry is keyed by the weights' hash, the model's config and the images' own bytes:
new weights, another architecture or other images never reuse it. Files are safetensors written
atomically (aecore.data.cache); one that fails to read or has the wrong shape is rebuilt. The folder
is kept under a byte budget (`AECORE_CODES_CACHE_MB`, default 512), least recently used first.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from dataclasses import asdict, is_dataclass
from pathlib import Path

import torch

from aecore.data import cache
from aecore.data.base import ImageData
from aecore.maps import codes_of

log = logging.getLogger("aecore.lab")

DEFAULT_BUDGET_MB = 512
UNCAPPED_MB = 2**30           # what inf means: a petabyte, no cap in practice
FORMAT = "codes-v1"


def codes_dir() -> Path:
    return cache.cache_dir() / "codes"


def budget_bytes() -> int:
    """The operator's cap on the folder ($AECORE_CODES_CACHE_MB: 0 turns the disk copy off, inf lifts the
    cap; anything else that is not a size, such as NaN or -1, keeps the default, with a warning in the log)."""
    raw = os.environ.get("AECORE_CODES_CACHE_MB")
    try:
        mb = float(DEFAULT_BUDGET_MB if raw is None else raw)
    except ValueError:
        mb = math.nan
    if math.isnan(mb) or mb < 0:
        log.warning("AECORE_CODES_CACHE_MB=%r is no size in MB; using %d", raw, DEFAULT_BUDGET_MB)
        mb = DEFAULT_BUDGET_MB
    return int(min(mb, UNCAPPED_MB) * 2**20)


def images_key(data: ImageData) -> str:
    """A hash of the images themselves (not their name: the bundled sample and the full split are both
    'mnist' test)."""
    images = data.images.detach().cpu().contiguous()
    digest = hashlib.sha256(str(tuple(images.shape)).encode())
    digest.update(images.numpy().reshape(-1).data)
    return digest.hexdigest()


def _config_text(model: torch.nn.Module) -> str:
    config = getattr(model, "config", None)
    fields = asdict(config) if is_dataclass(config) else repr(config)
    return json.dumps([type(model).__name__, fields], sort_keys=True, default=str)


def stored_codes(model: torch.nn.Module, data: ImageData, *, weights_key: str) -> torch.Tensor:
    """(N, d) float32 codes of `data` by `model` (as `codes_of`), from disk when this model's weights
    (`weights_key`, e.g. the weights' sha256) have encoded these very images before. An empty
    `weights_key` (weights of unknown identity) always encodes afresh."""
    budget = budget_bytes()
    if not weights_key or budget == 0:
        return codes_of(model, data)
    key = cache.source_key(FORMAT, weights_key, _config_text(model), images_key(data))
    path = codes_dir() / f"{key}.safetensors"
    hit = cache.load(path, ["codes"])
    if hit is not None:
        codes = hit[0]["codes"]
        if codes.dtype == torch.float32 and codes.dim() == 2 and codes.shape[0] == len(data):
            _touch(path)
            return codes
        log.warning("ignoring codes cache file %s of shape %s; encoding again", path, tuple(codes.shape))
    codes = codes_of(model, data)
    if codes.numel() * 4 <= budget:
        cache.save(path, {"codes": codes}, {"weights": str(weights_key)[:200]})
        prune(codes_dir(), budget)
    return codes


def _touch(path: Path) -> None:
    try:
        os.utime(path)                 # its mtime is when it was last used: pruning drops the oldest
    except OSError:
        pass


def prune(folder: Path, budget: int) -> None:
    """Delete the least recently used files until the folder holds at most `budget` bytes."""
    try:
        files = []
        for path in folder.glob("*.safetensors"):
            try:
                stat = path.stat()
            except OSError:            # another server pruned it meanwhile
                continue
            files.append((stat.st_mtime, stat.st_size, path))
    except OSError as err:
        log.warning("could not list the codes cache %s (%s)", folder, err)
        return
    total = sum(size for _, size, _ in files)
    for _, size, path in sorted(files, key=lambda f: f[0]):
        if total <= budget:
            break
        try:
            path.unlink()
        except OSError:
            pass
        total -= size
