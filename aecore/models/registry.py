"""Model registry, torchvision style: name -> model class (+ its config dataclass).

A new variant is one file in `aecore/models/` decorated with `@register_model("name")` and
imported in `aecore/models/__init__.py`; the registry-wide tests then cover it. It declares its
traits (`roles` and the rest, see `aecore.models.base`): `models_with(role)` and `has_role` are how
the lab and the pages find models, never by name.

Memory: `estimate_memory` builds a model on the meta device (shapes only) to count its parameters and
trace a forward pass's activations; `check_fits_memory` refuses, with the figures, a model that would
not fit in the free memory, to hold (`batch_size=None`; `build_model` does this) or to train.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from aecore.config import ModelConfig
from aecore.errors import ConfigError
from aecore.models.base import ROLES

_MODELS: dict[str, type] = {}
T = TypeVar("T")


def register_model(name: str, *, description: str = "") -> Callable[[T], T]:
    def wrap(cls: T) -> T:
        if name in _MODELS:
            raise ValueError(f"model {name!r} registered twice")
        unknown = set(getattr(cls, "roles", ())) - ROLES
        if unknown:
            raise ValueError(f"model {name!r} declares unknown roles {sorted(unknown)}; known: {sorted(ROLES)}")
        cls.registry_name = name  # type: ignore[attr-defined]
        cls.description = description or (cls.__doc__ or "").strip().splitlines()[0]  # type: ignore[attr-defined]
        _MODELS[name] = cls
        return cls

    return wrap


def list_models() -> list[str]:
    return sorted(_MODELS)


def get_model_class(name: str) -> type:
    try:
        return _MODELS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(list_models())}") from None


def models_with(role: str) -> list[str]:
    """Registered models declaring `role`, sorted: how the lab and the pages pick models without naming them."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; known: {sorted(ROLES)}")
    return sorted(name for name, cls in _MODELS.items() if role in cls.roles)


def has_role(name: Any, role: str) -> bool:
    """Whether `name` is a registered model declaring `role`; False for a name the registry does not
    know (a config.json or a link may say anything)."""
    cls = _MODELS.get(name) if isinstance(name, str) else None
    return cls is not None and role in cls.roles


def get_config_class(name: str) -> type[ModelConfig]:
    return get_model_class(name).config_class


def make_config(name: str, config: ModelConfig | dict[str, Any] | None = None, **overrides: Any) -> ModelConfig:
    """A validated config for model `name` from a config object, a dict and/or keyword overrides."""
    config_cls = get_config_class(name)
    if isinstance(config, ModelConfig):
        if not isinstance(config, config_cls):
            raise ConfigError(f"model {name!r} needs a {config_cls.__name__}, got {type(config).__name__}")
        data = config.to_dict()
    elif config is None or isinstance(config, dict):
        data = dict(config or {})
    else:
        raise ConfigError(f"{name} config must be a mapping of field names to values, got {type(config).__name__}")
    data.update(overrides)
    return config_cls.from_dict(data, where=f"{name} config")


def build_model(name: str, config: ModelConfig | dict[str, Any] | None = None, **overrides: Any):
    """Build a registered model from its name and a (partial) config; a config whose weights alone
    would not fit in the machine's memory is refused before anything is allocated."""
    config = make_config(name, config, **overrides)
    check_fits_memory(name, config, batch_size=None)
    return get_model_class(name)(config=config)


# --- memory: refuse a model the machine cannot hold, before allocating it ------------------------
GB = 1e9
TRAIN_COPIES = 4            # weights, gradients and Adam's two moments, one float each per parameter


@dataclass(frozen=True)
class MemoryEstimate:
    """What a model needs: `parameters` (count), `weights` (bytes of parameters and buffers),
    `per_example` / `fixed` (bytes of the activations a training step keeps: per example in the
    batch, and independent of the batch), None where the forward pass could not be traced."""

    parameters: int
    weights: int
    per_example: int | None
    fixed: int | None

    def training_bytes(self, batch_size: int) -> int:
        """Weights, gradients, Adam's moments (buffers counted with the parameters), and activations
        (kept for backward, plus their gradients) for one batch of `batch_size`."""
        if self.per_example is None or self.fixed is None:      # untraced (.item() in forward): 256 KB an example
            per_example, fixed = 64 * 4 * 1024, 0
        else:
            per_example, fixed = self.per_example, self.fixed
        return TRAIN_COPIES * self.weights + 2 * (fixed + per_example * max(int(batch_size), 1))


def _meta_model(name: str, config: ModelConfig):
    """The model built on the meta device (shapes only, nothing allocated); None where a model's
    constructor cannot run there."""
    import torch

    cls = get_model_class(name)
    try:
        with torch.device("meta"):
            return cls(config=config)
    except ConfigError:
        raise
    except Exception:  # noqa: BLE001 - a constructor that needs real data: no estimate, no refusal
        return None


def _activation_bytes(model, input_shape: tuple[int, ...], batch: int) -> int:
    """Bytes of every tensor a training forward pass makes (views excluded), traced on meta."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    total = [0]

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if not getattr(func, "is_view", False):
                for t in torch.utils._pytree.tree_leaves(out):
                    if isinstance(t, torch.Tensor):
                        total[0] += t.numel() * t.element_size()
            return out

    x = torch.rand(batch, *input_shape, device="meta")
    y = torch.zeros(batch, dtype=torch.long, device="meta")
    with Count():
        model(x, target=x, y=y)
    return total[0]


def estimate_memory(name: str, config: ModelConfig | dict[str, Any] | None = None, *,
                    activations: bool = True) -> MemoryEstimate | None:
    """Parameters and memory of model `name` with this config, counted on the meta device (nothing
    allocated); activations traced through two forward passes there unless `activations` is False.
    None where the model cannot be built on the meta device."""
    config = make_config(name, config)
    model = _meta_model(name, config)
    if model is None:
        return None
    parameters = sum(p.numel() for p in model.parameters())
    weights = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    per_example = fixed = None
    if not activations:
        return MemoryEstimate(parameters, weights, per_example, fixed)
    try:
        model.train()
        a2 = _activation_bytes(model, tuple(config.input_shape), 2)
        a4 = _activation_bytes(model, tuple(config.input_shape), 4)
        per_example, fixed = max((a4 - a2) // 2, 0), max(2 * a2 - a4, 0)
    except Exception:  # noqa: BLE001 - data-dependent code (.item()) cannot run on meta: guess instead
        pass
    return MemoryEstimate(parameters, weights, per_example, fixed)


def model_memory_bytes(name: str, config: ModelConfig | dict[str, Any] | None = None, *,
                       batch_size: int | None = 128) -> int | None:
    """Bytes model `name` needs: to train with batches of `batch_size`, or (batch_size None) to
    hold its weights. None where it cannot be estimated."""
    estimate = estimate_memory(name, config, activations=batch_size is not None)
    if estimate is None:
        return None
    return estimate.weights if batch_size is None else estimate.training_bytes(batch_size)


def available_memory_bytes(device: Any = None) -> int | None:
    """Memory free for a new model on `device` (default: the CPU): a CUDA device's free memory, else
    the machine's available memory (/proc/meminfo MemAvailable, bounded by a cgroup limit; else the
    physical memory). None where unknown."""
    import torch

    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except (RuntimeError, AssertionError, ValueError):
            return None
    found: list[int] = []
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
                    break
    except (OSError, ValueError, IndexError):
        pass
    try:  # a container's own limit (cgroup v2): the kernel kills the process there, whatever the host has
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as f:
            limit = f.read().strip()
        if limit.isdigit():
            with open("/sys/fs/cgroup/memory.current", encoding="ascii") as f:
                found.append(max(int(limit) - int(f.read().strip()), 0))
    except (OSError, ValueError):
        pass
    if not found:
        try:
            found.append(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (OSError, ValueError, AttributeError):
            return None
    return min(found)


def _where(device: Any) -> str:
    import torch

    device = torch.device(device) if device is not None else torch.device("cpu")
    return "this machine has" if device.type in ("cpu", "mps") else f"{device} has"


def check_fits_memory(name: str, config: ModelConfig | dict[str, Any] | None = None, *,
                      batch_size: int | None = 128, device: Any = None, available: int | None = None) -> int | None:
    """Refuse (ConfigError stating the figures) a model that would not fit in `device`'s free memory:
    to train with batches of `batch_size`, or (batch_size None) to hold its weights. Returns the bytes
    needed (None where unknown). `available` overrides the measured free memory (tests)."""
    estimate = estimate_memory(name, config, activations=batch_size is not None)
    if estimate is None:
        return None
    need = estimate.weights if batch_size is None else estimate.training_bytes(batch_size)
    have = available if available is not None else available_memory_bytes(device)
    if have is not None and need > have:
        task = "for its weights alone" if batch_size is None else f"to train (batch size {batch_size})"
        raise ConfigError(f"this model has {estimate.parameters:,} parameters and needs about {need / GB:.1f} GB "
                          f"{task}; {_where(device)} {have / GB:.1f} GB available (make the hidden layers, "
                          "channels or code smaller)")
    return need
