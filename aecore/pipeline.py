"""How a trained model becomes a model folder: measure it, record how it was trained, save it.

`aecore train`, `aecore zoo build` and the app's training jobs (`aecore.lab.jobs`) end a run the same
way, so a model folder says the same things whichever made it. Before training, `initial_model`
seeds the initial weights (the CLI and the zoo; the app builds its model when it checks a job). After:
  1. `round_to_stored`: with float16 storage, the weights are rounded first, so the metrics are those
     of the weights that ship (what `aecore eval` measures on the folder);
  2. `measure`: `evaluate` on the test split with the seed `aecore eval` uses by default (so it
     reproduces metrics.json), any extra measurements, and the test codes for the maps;
  3. `save_trained`: one atomic save (`aecore.store.save_model`) of the weights, config.json (the
     `recipe_record` and where it was `trained_on`) and metrics.json with its `provenance` record under
     "training". The maps (`aecore.maps.write_maps`) come after it.
They are separate steps because the app measures in a worker thread it may abandon (and then saves
without test metrics), and only rank 0 of a DDP run measures and saves.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from aecore import distributed, store
from aecore import evaluate as evaluation      # looked up when called: tests stand in for evaluate()
from aecore.data.base import ImageData
from aecore.device import device_label
from aecore.maps import codes_of
from aecore.models import build_model
from aecore.train import TrainConfig, TrainResult


def initial_model(name: str, config: dict[str, Any], *, seed: int) -> torch.nn.Module:
    """The untrained model with seeded initial weights: the same recipe gives the same model, whatever
    was built before it in this process."""
    torch.manual_seed(seed)
    return build_model(name, config)


def recipe_record(config: TrainConfig, *, val_fraction: float, **context: Any) -> dict[str, Any]:
    """config.json's "recipe": the training options, the share of the training split held out for
    validation, and what the caller adds about the run (zoo_id, app_job, ...)."""
    return {**config.to_dict(), "val_fraction": val_fraction, **context}


def provenance(result: TrainResult, *, precision: str = "fp32") -> dict[str, Any]:
    """metrics.json's "training" record, with the same keys from every caller. `seconds` adds up the
    finished epochs' own times, so a resumed run counts the epochs before the resume and a stopped one
    the epochs whose weights it keeps; time the run was held (paused in the app) is not in them
    (the trainer leaves it out: `aecore.train.Callback`)."""
    return {"history": result.history, "seconds": round(sum(epoch["seconds"] for epoch in result.history), 1),
            "images_seen": result.images_seen, "device": result.device, "precision": precision,
            "processes": distributed.world_size(), "stopped_early": result.cancelled}


def trained_on(result: TrainResult) -> str:
    """config.json's "trained_on": the device in words, and the process group when DDP trained it."""
    processes = distributed.world_size()
    ddp = f", {processes} processes (DDP, {distributed.backend()})" if processes > 1 else ""
    return device_label(result.device) + ddp


@torch.no_grad()
def round_to_stored(model: torch.nn.Module, *, half: bool) -> None:
    """With `half`, round the floating-point weights to float16 in place, as saving will: the metrics
    measured next are then those of the model that is read back."""
    if half:
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.half())


def measure(model: torch.nn.Module, test: ImageData, *, noise: str | None, limit: int | None = None,
            extras: Sequence[Callable[[], dict[str, Any]]] = (), codes: bool = True,
            abandoned: threading.Event | None = None) -> tuple[dict[str, Any], Tensor | None]:
    """(test metrics, test codes) of a trained model: `evaluate` (seed 0, as `aecore eval` unless told
    otherwise), then each of `extras`, each adding metrics, then the codes of the test images for
    its maps (None when not asked for). Once `abandoned` is set, the steps not begun are skipped."""
    metrics = evaluation.evaluate(model, test, noise=noise, seed=0, limit=limit)
    for extra in extras:
        if abandoned is not None and abandoned.is_set():
            break
        metrics.update(extra())
    wanted = codes and not (abandoned is not None and abandoned.is_set())
    return metrics, codes_of(model, test) if wanted else None


def save_trained(model: torch.nn.Module, path: str | os.PathLike, *, result: TrainResult,
                 metrics: dict[str, Any], dataset: str, classes: list[str] | None, recipe: dict[str, Any],
                 notes: str | None = None, half: bool = False, precision: str = "fp32") -> dict[str, Any]:
    """Save the model folder in one atomic save: weights, config.json (recipe, `trained_on`) and
    metrics.json (`metrics` plus the `provenance` record under "training"); returns the metrics written."""
    metrics = {**metrics, "training": provenance(result, precision=precision)}
    store.save_model(model, path, dataset=dataset, classes=classes, recipe=recipe, metrics=metrics,
                     trained_on=trained_on(result), half=half, notes=notes)
    return metrics
