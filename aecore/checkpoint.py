"""Training checkpoints: one safetensors file holding the model, the optimiser and the trainer's counters.

The trainer writes it atomically at the end of every epoch (rank 0 alone under DDP) and reads it
back to resume. Tensors: `model/NAME` (the unwrapped model's state_dict) and `optim/ID/NAME` (Adam's
per-parameter tensors). Metadata, JSON strings: `aecore_checkpoint` = "1", `trainer` (stages,
stage_index, epoch, step, images_seen, history, train_config, model), `optim_groups` (Adam's
param_groups) and `optim_scalars` (per parameter, the state Adam keeps as plain numbers).

A file to resume from may be truncated, foreign or crafted, so nothing in it is used before it is
checked: every metadata field's type and range, the model's tensors against the model, and Adam's
state against the fresh optimiser. A bad file is one ModelFileError naming the file and the problem.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from aecore import distributed
from aecore.atomic import atomic_write
from aecore.config import short_repr
from aecore.errors import ModelFileError

CHECKPOINT_NAME = "checkpoint.safetensors"


@dataclass
class Saved:
    """What a checked checkpoint holds besides the model's tensors (loaded into the model already)."""

    stage_index: int
    epoch: int                          # epochs completed in that stage
    step: int
    images_seen: int
    history: list[dict[str, Any]]
    optimizer: dict[str, Any]           # Adam's {"state", "param_groups"}, for restore_optimizer


def save(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, trainer: dict[str, Any]) -> None:
    """Write model + optimiser + `trainer` (the counters and recipe listed above) to `path` atomically."""
    from safetensors.torch import save as to_bytes

    tensors: dict[str, Tensor] = {}
    for name, value in model.state_dict().items():
        tensors[f"model/{name}"] = value.detach().contiguous().cpu()
    opt_state = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for pid, pstate in opt_state["state"].items():
        for key, value in pstate.items():
            if isinstance(value, Tensor):
                tensors[f"optim/{pid}/{key}"] = value.detach().contiguous().cpu()
            else:
                scalars.setdefault(str(pid), {})[key] = value
    metadata = {
        "aecore_checkpoint": "1",
        "trainer": json.dumps(trainer),
        "optim_groups": json.dumps(opt_state["param_groups"]),
        "optim_scalars": json.dumps(scalars),
    }
    atomic_write(path, to_bytes(tensors, metadata=metadata))


def load(path: Path | None, model: torch.nn.Module, stages: list[str], *, device: torch.device, ddp: bool,
         max_epochs: int) -> Saved:
    """Read and check the checkpoint (every field's type and range, the model's tensors against
    `model`) and load the model's tensors; Adam's state is checked by restore_optimizer, against the
    optimiser of its stage when that stage begins."""
    from safetensors import SafetensorError
    from safetensors.torch import load as from_bytes

    bad = functools.partial(_bad, path)
    data = _read(path, device=device, ddp=ddp)
    try:
        tensors = from_bytes(data)
        header_size = int.from_bytes(data[:8], "little")         # safetensors: u64 size, JSON header
        metadata = json.loads(data[8:8 + header_size]).get("__metadata__") or {}
    except (SafetensorError, OSError, KeyError, ValueError, AttributeError, RecursionError) as err:
        raise ModelFileError(f"checkpoint {path} is unreadable ({_first_line(err)}); "
                             "delete it to start over") from err
    if not isinstance(metadata, dict) or metadata.get("aecore_checkpoint") != "1":
        raise bad("not an aecore training checkpoint (no 'aecore_checkpoint' mark)")
    trainer = _check_trainer_state(_metadata_json(metadata, "trainer", bad), bad, max_epochs)
    groups = _check_groups(_metadata_json(metadata, "optim_groups", bad), bad)
    scalars = _check_scalars(_metadata_json(metadata, "optim_scalars", bad), bad)
    if trainer["stages"] != stages or trainer["model"] != getattr(model, "registry_name", ""):
        raise ModelFileError(f"checkpoint {path} was made for another model; use another --out or delete it")
    if trainer["stage_index"] >= len(stages):
        raise bad(f"stage_index {trainer['stage_index']} but the model has {len(stages)} stage(s)")
    model_state: dict[str, Tensor] = {}
    optim_state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("model/"):
            model_state[key[len("model/"):]] = value
            continue
        parts = key.split("/")
        if len(parts) != 3 or parts[0] != "optim" or not parts[1].isdigit() or not parts[2] or len(parts[1]) > 9:
            raise bad(f"unexpected tensor {_short(key)} (expected model/NAME or optim/ID/NAME)")
        optim_state.setdefault(int(parts[1]), {})[parts[2]] = value.to(device)
    _check_model_state(model, model_state, path)
    try:
        model.load_state_dict(model_state, strict=True)
    except RuntimeError as err:     # checked above; a last guard, its many-line message summarised
        raise ModelFileError(f"checkpoint {path} does not fit this model's configuration "
                             f"({_first_line(err)}); use another --out or delete it") from None
    for pid, values in scalars.items():
        optim_state.setdefault(int(pid), {}).update(values)
    return Saved(stage_index=trainer["stage_index"], epoch=trainer["epoch"], step=trainer["step"],
                 images_seen=trainer["images_seen"], history=trainer["history"],
                 optimizer={"state": optim_state, "param_groups": groups})


def restore_optimizer(optimizer: torch.optim.Optimizer, saved: dict[str, Any], path: Path | None) -> None:
    """Load the checkpoint's Adam state into the fresh optimiser, after checking it fits: the same
    groups of the same sizes, known settings of the right types, and per parameter the state Adam
    keeps (step, exp_avg, exp_avg_sq) in the parameter's shape. Flags (fused, foreach, ...) stay
    the fresh optimiser's: they belong to this device, not to the one that wrote the file."""
    bad = functools.partial(_bad, path)
    fresh = optimizer.state_dict()
    fresh_groups, groups = fresh["param_groups"], saved["param_groups"]
    sizes = [len(g["params"]) for g in groups]
    here = [len(g["params"]) for g in fresh_groups]
    if sizes != here:
        raise bad(f"optimiser state does not fit this model (parameter groups of sizes {sizes} in the file, "
                  f"{here} here)")
    params = [p for g in optimizer.param_groups for p in g["params"]]
    by_id = {pid: params[i] for i, pid in enumerate(pid for g in groups for pid in g["params"])}
    loaded_groups = []
    for g, f in zip(groups, fresh_groups):
        unknown = sorted(set(g) - set(f))
        if unknown:
            raise bad(f"optimiser state does not fit this model (unknown setting(s) "
                      f"{', '.join(_short(k, 40) for k in unknown[:5])})")
        group = dict(f, params=g["params"])
        for key, value in f.items():
            if key == "params" or key not in g or isinstance(value, bool) or value is None:
                continue                                     # flags: this optimiser's
            group[key] = _check_setting(key, g[key], value, bad)
        loaded_groups.append(group)
    amsgrad = {pid: bool(g.get("amsgrad")) for g in loaded_groups for pid in g["params"]}
    state: dict[int, dict[str, Any]] = {}
    for pid, values in saved["state"].items():
        if pid not in by_id:
            raise bad(f"optimiser state does not fit this model (it names parameter {pid}; "
                      f"this model's optimiser has {len(params)})")
        want = {"step", "exp_avg", "exp_avg_sq"} | ({"max_exp_avg_sq"} if amsgrad[pid] else set())
        if set(values) != want:
            raise bad(f"optimiser state of parameter {pid} holds {_short(sorted(values))}, expected {sorted(want)}")
        param = by_id[pid]
        for name, value in values.items():
            if name == "step":
                step = float(value) if _is_number(value) else None
                if isinstance(value, Tensor) and value.numel() == 1 and not value.dtype.is_complex:
                    step = float(value.reshape(()).double())
                if step is None or not math.isfinite(step) or step < 0:
                    raise bad(f"optimiser step of parameter {pid} is {_short(value)}, not a count")
                continue
            if not isinstance(value, Tensor) or not value.is_floating_point() or value.shape != param.shape:
                shown = (f"{list(value.shape)} {str(value.dtype).replace('torch.', '')}"
                         if isinstance(value, Tensor) else _short(value))
                raise bad(f"optimiser state does not fit this model ({name} of parameter {pid} "
                          f"is {shown}, the parameter is {list(param.shape)} float)")
            if not bool(torch.isfinite(value).all()) or (name != "exp_avg" and bool((value < 0).any())):
                raise bad(f"optimiser {name} of parameter {pid} holds NaN, infinite or negative values")
        # Adam keeps step as a float32 tensor (it moves it to the device where fused needs it there)
        state[pid] = dict(values, step=torch.tensor(step, dtype=torch.float32))
    try:
        optimizer.load_state_dict({"state": state, "param_groups": loaded_groups})
    except (ValueError, RuntimeError, KeyError, TypeError, IndexError) as err:   # checked above; a last guard
        raise bad(f"optimiser state does not fit this model ({_first_line(err)})") from None


# --- reading ----------------------------------------------------------------------------------------
def _read(path: Path | None, *, device: torch.device, ddp: bool) -> bytes:
    """The checkpoint file; under DDP rank 0 reads it and sends it to all (other nodes may not see
    rank 0's disk), so every process resumes from the same bytes or fails with the same error."""
    data: bytes | None = None
    if distributed.is_main() and path is not None and path.is_file():
        try:
            data = path.read_bytes()
        except OSError as err:
            if not ddp:
                raise ModelFileError(f"checkpoint {path} is unreadable ({err}); delete it to start over") from err
            data = b""  # parsed as unreadable, on every process
    if ddp:
        data = distributed.broadcast_bytes(data, device)
    if data is None:
        raise ModelFileError(f"nothing to resume: no {CHECKPOINT_NAME} in {path.parent if path else '(no dir)'}")
    return data


def _bad(path: Path | None, problem: str, hint: str = "delete it to start over") -> ModelFileError:
    """The one error of a checkpoint that cannot be resumed: one line naming the file and problem."""
    return ModelFileError(f"checkpoint {path}: {problem}; {hint}")


def _metadata_json(metadata: dict[str, Any], key: str, bad: Callable[[str], ModelFileError]) -> Any:
    if key not in metadata:
        raise bad(f"its metadata lacks {key!r}")
    try:
        return json.loads(metadata[key])
    except (TypeError, ValueError, RecursionError) as err:   # ValueError: bad JSON, or a 5000-digit integer
        raise bad(f"metadata {key!r} is not readable JSON ({_first_line(err).split(';')[0]})") from None


def _check_model_state(model: torch.nn.Module, saved: dict[str, Tensor], path: Path | None) -> None:
    """The model's tensors: the same names, shapes and dtypes as this model's, all finite."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(saved))
    unexpected = sorted(set(saved) - set(expected))
    mismatched = [k for k in expected if k in saved and (saved[k].shape != expected[k].shape
                                                          or saved[k].dtype != expected[k].dtype)]
    if missing or unexpected or mismatched:
        parts = []
        if mismatched:
            k = mismatched[0]
            parts.append(f"{len(mismatched)} tensor(s) differ, e.g. {k}: {list(saved[k].shape)} "
                         f"{str(saved[k].dtype).replace('torch.', '')} in the file, {list(expected[k].shape)} "
                         f"{str(expected[k].dtype).replace('torch.', '')} in the model")
        if missing:
            parts.append(f"{len(missing)} missing, e.g. {missing[0]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected, e.g. {_short(unexpected[0])}")
        raise ModelFileError(f"checkpoint {path} does not fit this model's configuration "
                             f"({'; '.join(parts)}); use another --out or delete it")
    for name, value in saved.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise _bad(path, f"tensor {name!r} holds NaN or infinite values")


# --- metadata checks: JSON from a file, so every field's type is checked ------------------------------
def _short(value: Any, limit: int = 60) -> str:
    return short_repr(value, limit)


def _first_line(err: BaseException) -> str:
    """An exception's message as one short line (torch's load_state_dict errors span many)."""
    text = " ".join(str(err).split())
    return text if len(text) <= 200 else text[:197] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_trainer_state(trainer: Any, bad, max_epochs: int) -> dict[str, Any]:
    """The 'trainer' metadata: stages, counters, history, recipe and model name, each of its type."""
    if not isinstance(trainer, dict):
        raise bad(f"metadata 'trainer' must be a JSON object, got {_short(trainer)}")
    checks = {
        "stages": ("a list of stage names", lambda v: isinstance(v, list) and v and all(isinstance(s, str) for s in v)),
        "stage_index": ("a count", lambda v: _is_int(v) and v >= 0),
        "epoch": (f"a count of at most {max_epochs}", lambda v: _is_int(v) and 0 <= v <= max_epochs),
        "step": ("a count", lambda v: _is_int(v) and v >= 0),
        "images_seen": ("a count", lambda v: _is_int(v) and v >= 0),
        "history": ("a list of epoch records", lambda v: isinstance(v, list) and len(v) <= 10 * max_epochs),
        "train_config": ("a JSON object", lambda v: isinstance(v, dict)),
        "model": ("a model name", lambda v: isinstance(v, str)),
    }
    for key, (want, ok) in checks.items():
        if key not in trainer:
            raise bad(f"metadata 'trainer' lacks {key!r}")
        if not ok(trainer[key]):
            raise bad(f"metadata 'trainer' field {key!r} must be {want}, got {_short(trainer[key])}")
    for i, row in enumerate(trainer["history"]):
        if not _history_row_ok(row):
            raise bad(f"metadata 'trainer' history[{i}] is not an epoch record "
                      f"(stage, epoch, train and val losses, seconds): {_short(row)}")
    return trainer


def _history_row_ok(row: Any) -> bool:
    def losses(v: Any) -> bool:
        return isinstance(v, dict) and all(isinstance(k, str) and _is_number(x) for k, x in v.items())

    return (isinstance(row, dict) and {"stage", "epoch", "train", "val", "seconds"} <= set(row)
            and isinstance(row["stage"], str) and _is_int(row["epoch"]) and row["epoch"] >= 1
            and losses(row["train"]) and (row["val"] is None or losses(row["val"]))
            and _is_number(row["seconds"]) and row["seconds"] >= 0)


def _check_groups(groups: Any, bad) -> list[dict[str, Any]]:
    """The 'optim_groups' metadata: a non-empty list of groups, each naming distinct parameter ids."""
    if not isinstance(groups, list) or not groups:
        raise bad(f"metadata 'optim_groups' must be a non-empty list of parameter groups, got {_short(groups)}")
    seen: set[int] = set()
    for i, group in enumerate(groups):
        if not isinstance(group, dict) or not isinstance(group.get("params"), list):
            raise bad(f"optimiser group {i} must be a JSON object with a list 'params', got {_short(group)}")
        ids = group["params"]
        if not all(_is_int(p) and 0 <= p < 10**9 for p in ids) or len(set(ids)) != len(ids) or seen & set(ids):
            raise bad(f"optimiser group {i}: 'params' must be distinct parameter ids, got {_short(ids)}")
        seen |= set(ids)
    if not seen:
        raise bad("the optimiser groups name no parameters")
    return groups


def _check_scalars(scalars: Any, bad) -> dict[str, dict[str, Any]]:
    """The 'optim_scalars' metadata: {parameter id: {name: number}} (state Adam keeps as plain numbers)."""
    if not isinstance(scalars, dict) or not all(
            isinstance(k, str) and k.isdigit() and len(k) <= 9 and isinstance(v, dict)
            and all(isinstance(n, str) and _is_number(x) for n, x in v.items()) for k, v in scalars.items()):
        raise bad(f"metadata 'optim_scalars' must map parameter ids to numbers, got {_short(scalars)}")
    return scalars


def _check_setting(key: str, value: Any, fresh: Any, bad) -> Any:
    """An Adam setting from the file: a number of the fresh one's kind, in its range (betas: 2 in [0, 1))."""
    if isinstance(fresh, (tuple, list)):
        ok = (isinstance(value, list) and len(value) == len(fresh) and all(_is_number(v) and 0 <= v < 1 for v in value))
        if ok:
            return tuple(value) if isinstance(fresh, tuple) else list(value)
    elif isinstance(fresh, (int, float)) or isinstance(fresh, Tensor):
        limits = {"lr": (0.0, 10.0), "eps": (0.0, 1.0), "weight_decay": (0.0, 1.0)}.get(key, (-1e12, 1e12))
        if _is_number(value) and limits[0] <= value <= limits[1] and not (key in ("lr", "eps") and value == 0):
            return type(fresh)(value) if isinstance(fresh, (int, float)) else value
    elif isinstance(fresh, str) and isinstance(value, str) and len(value) <= 100:
        return value
    raise bad(f"optimiser setting {key!r} is {_short(value)}, not a valid value")
