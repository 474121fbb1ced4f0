"""One trainer for every model: it calls `model(x, target=clean, y=labels).loss` and nothing else,
except that a model whose `updates_itself()` applies its own update to each batch (`update_step`, see
aecore.models.base): the trainer then runs no backward pass and no optimiser step for it.

The split lives on the device as one uint8 tensor; each batch is an index slice of a seeded
permutation, converted to float on the fly. Progress goes to callbacks (CLI progress bar, the app's
live loss chart); a cancel event is checked every batch; a checkpoint (`aecore.checkpoint`) is
written atomically at the end of every epoch, so a killed run resumes from the last completed epoch.
Time a callback holds the training thread (a pause; its `held_seconds`, see Callback) is not
training time: it is left out of the epochs' seconds and the result's.

Reproducibility: every epoch re-seeds the permutation, the corruption generator and torch's global
RNG (dropout, VAE sampling) from (seed, stage, epoch), so a resumed run continues exactly as an
uninterrupted one would.

On the CPU, training runs in a thread of its own that flushes denormal floats to zero: arithmetic on
values below float32's smallest normal (an output layer's gradients near a saturated sigmoid) is
many times slower on x86 (bench/README.md). See `aecore.device.run_flushing_denormals`.

DDP (a process group joined by `aecore.distributed.init`, e.g. under torchrun): every process holds
the whole split on its device and draws the same permutation; each global batch of `batch_size`
rows is split into contiguous per-process slices (batch_size / processes rows each), and DDP
averages the gradients, so a step sees the same global batch as in one process. Corruption and
binarisation are drawn for the global batch and sliced, so the trainer's randomness does not depend
on the number of processes; the model's own randomness (dropout, VAE sampling) is seeded per
process. Losses and validation are reduced over processes; only rank 0 writes checkpoints. A
checkpoint holds the unwrapped model, the optimiser and the epoch, nothing per-process, so a run
resumes on any number of processes. Refused under DDP: batch_size or labelled_per_batch not
divisible by the number of processes, and models whose loss is not a mean over examples
(`loss_is_example_mean()`: losses on batch statistics would change meaning on a shard).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal

import torch
from torch import Tensor

from aecore import checkpoint, distributed
from aecore.checkpoint import CHECKPOINT_NAME
from aecore.config import StrictConfig, check_range, short_repr
from aecore.data.base import ImageData
from aecore.device import bf16_problem, pick_device, run_flushing_denormals
from aecore.errors import ConfigError, TrainingError
from aecore.noise import make_generator, parse_noise

MAX_EPOCHS = 100_000
MAX_BATCH = 1 << 20
PRECISIONS = ("fp32", "bf16")


@dataclass
class TrainConfig(StrictConfig):
    """The training recipe; recorded in every saved model's config.json."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0
    noise: str | None = None          # e.g. "gaussian:0.5", "masking:0.5", "saltpepper:0.2"
    labels: int | None = None         # keep this many labels (class-balanced, seeded); the rest become -1
    stage_epochs: int | None = None   # epochs for each greedy pretraining stage (None: same as epochs)
    grad_clip: float | None = None    # max global grad norm, None = off
    lr_schedule: Literal["constant", "cosine"] = "constant"   # cosine: lr decays to 0 over each stage
    binarize: bool = False            # dynamic binarisation: each batch is Bernoulli(x), input and target
    labelled_per_batch: int = 0       # add this many labelled rows (drawn with replacement) to each batch
    log_every: int = 10               # batches between loss read-outs (each read-out syncs the device)

    def validate(self) -> None:
        super().validate()
        check_range("epochs", self.epochs, 1, MAX_EPOCHS)
        check_range("batch_size", self.batch_size, 1, MAX_BATCH)
        check_range("lr", self.lr, 0.0, 10.0, lo_open=True)
        check_range("weight_decay", self.weight_decay, 0.0, 1.0)
        check_range("seed", self.seed, 0, 2**63 - 1)
        if self.labels is not None:
            check_range("labels", self.labels, 1, 10**9)
        if self.stage_epochs is not None:
            check_range("stage_epochs", self.stage_epochs, 0, MAX_EPOCHS)
        if self.grad_clip is not None:
            check_range("grad_clip", self.grad_clip, 0.0, None, lo_open=True)
        check_range("log_every", self.log_every, 1, 10**6)
        check_range("labelled_per_batch", self.labelled_per_batch, 0, MAX_BATCH)
        try:
            parse_noise(self.noise)
        except ConfigError as err:      # name the field: the message may reach the user from a config.json
            raise ConfigError(f"noise {self.noise!r}: {err}") from None


@dataclass
class TrainState:
    """What callbacks see. Loss parts are plain floats (means over the batches read so far)."""

    stage: str = ""
    stage_index: int = 0
    n_stages: int = 1
    epoch: int = 0                      # epochs completed in this stage
    epochs: int = 0                     # epochs this stage will run
    batch: int = 0                      # batches done in this epoch
    batches_per_epoch: int = 0
    step: int = 0                       # optimiser steps over the whole run
    images_seen: int = 0
    parts: dict[str, float] = field(default_factory=dict)       # latest read-out (mean since last)
    epoch_parts: dict[str, float] = field(default_factory=dict)  # mean over this epoch so far
    val_parts: dict[str, float] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)  # one row per finished epoch
    started: float = field(default_factory=time.perf_counter)
    cancelled: bool = False

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    @property
    def progress(self) -> float:
        """Fraction of the whole run done, in [0, 1]."""
        per_stage = 1.0 / max(self.n_stages, 1)
        in_stage = (self.epoch + self.batch / max(self.batches_per_epoch, 1)) / max(self.epochs, 1)
        return min(1.0, (self.stage_index + min(in_stage, 1.0)) * per_stage)


class Callback:
    """Override any of these; every hook gets the live TrainState (duck typing works too).

    Held time: a callback whose hook may hold the training thread (wait in it, e.g. a pause) can say
    how long with an optional attribute or property `held_seconds`: the seconds it has held the
    thread in all so far (a number that only grows; read in the training thread). The trainer leaves
    them out of each epoch's `seconds` in the history (so out of metrics.json's training seconds and of
    any rate made from them) and out of `TrainResult.seconds`. `TrainState.elapsed` stays wall time.
    """

    def on_train_begin(self, state: TrainState) -> None: ...
    def on_stage_begin(self, state: TrainState) -> None: ...
    def on_batch_end(self, state: TrainState) -> None: ...
    def on_epoch_end(self, state: TrainState) -> None: ...
    def on_train_end(self, state: TrainState) -> None: ...


@dataclass
class TrainResult:
    history: list[dict[str, Any]]
    cancelled: bool
    seconds: float                      # the run's time, less the callbacks' `held_seconds` (see Callback)
    images_seen: int
    device: str


def mask_labels(labels: Tensor, keep: int | None, *, seed: int) -> Tensor:
    """Keep `keep` labels, class-balanced and seeded; set the rest to -1 (unlabelled)."""
    if keep is None or keep >= int((labels >= 0).sum()):
        return labels
    generator = torch.Generator().manual_seed(seed)
    labels_cpu = labels.cpu()
    classes = torch.unique(labels_cpu[labels_cpu >= 0])
    per_class, extra = divmod(keep, len(classes))
    kept: list[Tensor] = []
    for i, cls in enumerate(classes.tolist()):
        members = torch.nonzero(labels_cpu == cls).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        kept.append(members[: per_class + (1 if i < extra else 0)])
    masked = torch.full_like(labels_cpu, -1)
    index = torch.cat(kept)
    masked[index] = labels_cpu[index]
    return masked.to(labels.device)


def check_batch_split(batch_size: int, world: int, *, labelled_per_batch: int = 0) -> None:
    """Refuse batches that do not split evenly over `world` DDP processes. It needs no process group,
    so the CLI calls it before joining one: a refused recipe then ends every process alike, with no
    group to tear down mid-flight. Sizes below 1 are left to TrainConfig.validate to refuse."""
    if world > 1 and batch_size > 0 and batch_size % world:
        raise ConfigError(f"batch_size {batch_size} does not split evenly over {world} processes (DDP keeps "
                          f"the global batch: each process takes batch_size / {world} rows); "
                          f"use a multiple of {world}")
    if world > 1 and labelled_per_batch > 0 and labelled_per_batch % world:
        raise ConfigError(f"labelled_per_batch {labelled_per_batch} does not split evenly over {world} "
                          f"processes; use a multiple of {world}")


def _epoch_seed(seed: int, stage_index: int, epoch: int) -> int:
    return (seed * 1_000_003 + stage_index * 10_007 + epoch) % (2**63 - 1)


def _rank_seed(seed: int, rank: int) -> int:
    """Rank 0 keeps `seed` (one process is unchanged); other ranks get an unrelated seed, so their
    dropout masks and VAE samples are independent of rank 0's rather than copies of them."""
    if rank == 0:
        return seed
    digest = hashlib.blake2b(f"{seed}:{rank}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % (2**63 - 1)


@dataclass
class _LossSums:
    """Loss parts of the batches since the last read-out, summed on the device (adding costs no sync),
    and the epoch's sums of read-out means, weighted by their batches."""

    parts: dict[str, Tensor] = field(default_factory=dict)
    batches: int = 0
    epoch: dict[str, float] = field(default_factory=dict)
    epoch_batches: int = 0

    @torch.no_grad()
    def add(self, parts: dict[str, Tensor]) -> None:
        for name, value in parts.items():
            self.parts[name] = self.parts[name] + value if name in self.parts else value.clone()
        self.batches += 1


class Trainer:
    """Train any registered model on an ImageData split.

    `cancel` is a threading.Event (or anything with is_set()); when set, training stops after the
    current batch, the partial epoch is not checkpointed, and `fit` returns cancelled=True. Under DDP
    the processes agree to stop at the next loss read-out (every `log_every` batches) instead.
    `precision` "bf16" runs forward passes under bfloat16 autocast (a CUDA GPU with bfloat16, or a
    CPU with native bfloat16 arithmetic; weights, optimiser and checkpoints stay float32). Callbacks
    run in every process; give them to rank 0 only if they print or write.
    """

    def __init__(self, model: torch.nn.Module, train: ImageData, *, config: TrainConfig | None = None,
                 val: ImageData | None = None, callbacks: Iterable[Callback] = (), device: str | None = None,
                 checkpoint_dir: str | Path | None = None, cancel: threading.Event | None = None,
                 precision: str = "fp32"):
        self.config = config or TrainConfig()
        self.config.validate()
        self.device = pick_device(device)
        if precision not in PRECISIONS:
            raise ConfigError(f"precision {short_repr(precision)} is not one of {', '.join(PRECISIONS)}")
        if precision == "bf16" and (problem := bf16_problem(self.device)):
            raise ConfigError(f"precision bf16: {problem}; use fp32")
        self.precision = precision
        self.model = model.to(self.device)
        model_shape = tuple(getattr(getattr(model, "config", None), "input_shape", train.input_shape))
        if math.prod(model_shape) != math.prod(train.input_shape):
            raise ConfigError(f"model expects inputs of shape {list(model_shape)}, "
                              f"but dataset {train.name!r} has {list(train.input_shape)}")
        self.shape = model_shape
        if len(train) == 0:
            raise ConfigError(f"dataset {train.name!r} ({train.split}) is empty")
        labels = mask_labels(train.labels, self.config.labels, seed=self.config.seed)
        self.train = dataclasses.replace(train, labels=labels).to(self.device)
        self.val = val.to(self.device) if val is not None and len(val) else None
        self.noise = parse_noise(self.config.noise)
        self.callbacks = list(callbacks)
        self.checkpoint_path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir else None
        self.cancel = cancel or threading.Event()
        self.state = TrainState()
        self.optimizer: torch.optim.Optimizer | None = None
        self._pending_optimizer: dict[str, Any] | None = None  # Adam state from a checkpoint, loaded at stage start
        self.ddp = distributed.is_initialized()
        self.rank, self.world = distributed.rank(), distributed.world_size()
        self._net: torch.nn.Module = self.model  # what training batches go through: the model, or its DDP wrapper
        if self.ddp:
            self._check_distributed()

    # --- public -------------------------------------------------------------------------
    def fit(self, *, resume: bool = False) -> TrainResult:
        if self.device.type == "cpu":  # denormals slow CPU arithmetic many times over; see run_flushing_denormals
            return run_flushing_denormals(lambda: self._fit(resume), on_interrupt=self.cancel.set)
        return self._fit(resume)

    def _fit(self, resume: bool) -> TrainResult:
        stages = self.model.stages() if hasattr(self.model, "stages") else ["train"]
        state = self.state = TrainState(n_stages=len(stages))
        held = self._held_seconds()
        start_stage, start_epoch = 0, 0
        if resume:
            start_stage, start_epoch = self._load_checkpoint(stages)
        self._emit("on_train_begin")
        for stage_index in range(start_stage, len(stages)):
            stage = stages[stage_index]
            epochs = self._epochs_for(stage, len(stages))
            state.stage, state.stage_index, state.epochs = stage, stage_index, epochs
            first_epoch = start_epoch if stage_index == start_stage else 0
            state.epoch = first_epoch
            self._begin_stage(stage, restoring=stage_index == start_stage and resume)
            self._emit("on_stage_begin")
            for epoch in range(first_epoch, epochs):
                if not self._run_epoch(stage_index, epoch):
                    state.cancelled = True
                    break
                state.epoch = epoch + 1
                self._save_checkpoint(stages)
                self._emit("on_epoch_end")
            if state.cancelled:
                break
            if hasattr(self.model, "end_stage"):
                self.model.end_stage(stage)
        self._emit("on_train_end")
        self._net = self.model  # drop the DDP wrapper (and its gradient buckets)
        self.model.eval()
        seconds = max(0.0, state.elapsed - (self._held_seconds() - held))
        return TrainResult(history=list(state.history), cancelled=state.cancelled, seconds=seconds,
                           images_seen=state.images_seen, device=str(self.device))

    def remove_checkpoint(self) -> None:
        if self.checkpoint_path and self.checkpoint_path.exists():
            self.checkpoint_path.unlink()

    # --- internals ------------------------------------------------------------------------
    def _check_distributed(self) -> None:
        """Check every process has the same data and recipe, then refuse what DDP would change."""
        cfg, world = self.config, self.world
        if distributed.backend() == "nccl" and self.device.type != "cuda":
            raise ConfigError(f"the process group uses NCCL, which needs CUDA tensors, but training is on "
                              f"{self.device}")
        val = self.val
        signature = (len(self.train), int(self.train.images.sum(dtype=torch.int64)), int(self.train.labels.sum()),
                     0 if val is None else len(val), 0 if val is None else int(val.images.sum(dtype=torch.int64)),
                     cfg.to_dict(), self.shape, sum(p.numel() for p in self.model.parameters()))
        other = distributed.first_disagreeing_rank(signature)  # collective: before any error that could differ
        if other is not None:
            raise ConfigError(f"process {other} loaded other data, another recipe or another model than process 0; "
                              "every process must run the same command")
        if world == 1:
            return
        if self._updates_itself():
            name = getattr(self.model, "registry_name", "") or type(self.model).__name__
            raise ConfigError(f"model {name!r} applies its own update rule, which each of the {world} processes "
                              "would apply to its own copy of the weights; train it in one process")
        check_batch_split(cfg.batch_size, world, labelled_per_batch=cfg.labelled_per_batch)
        example_mean = getattr(self.model, "loss_is_example_mean", None)
        if example_mean is not None and not example_mean():
            name = getattr(self.model, "registry_name", "") or type(self.model).__name__
            raise ConfigError(f"model {name!r} has a loss built on statistics of the whole batch, which each of "
                              f"the {world} processes would compute on its shard alone; train it in one process")

    def _epochs_for(self, stage: str, n_stages: int) -> int:
        if n_stages > 1 and stage != "finetune" and self.config.stage_epochs is not None:
            return self.config.stage_epochs
        return self.config.epochs

    def _begin_stage(self, stage: str, *, restoring: bool) -> None:
        if hasattr(self.model, "begin_stage"):
            self.model.begin_stage(stage)
        if self.ddp:
            # Wrapped anew for every stage: DDP registers the parameters that require grad when it is
            # built, and a greedy stage (stacked-ae) trains only some, all of them used in forward, so
            # find_unused_parameters (an extra graph walk per step) is not needed. Construction copies
            # rank 0's parameters to every process. Buffers are not broadcast before every forward:
            # they start equal (same model, same checkpoint) and no model DDP accepts changes them
            # in forward (stacked-ae's filter snapshots change in end_stage, from equal weights).
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index if self.device.index is not None else torch.cuda.current_device()] \
                if self.device.type == "cuda" else None
            no_buffer_sync = ({"forward_sync_buffers": False}   # torch >= 2.13; broadcast_buffers before
                              if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
                              else {"broadcast_buffers": False})
            self._net = DistributedDataParallel(self.model, device_ids=ids, **no_buffer_sync)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = make_adam(params, lr=self.config.lr, weight_decay=self.config.weight_decay)
        if restoring and self._pending_optimizer is not None:
            checkpoint.restore_optimizer(self.optimizer, self._pending_optimizer, self.checkpoint_path)
            self._pending_optimizer = None

    def _run_epoch(self, stage_index: int, epoch: int) -> bool:
        """One pass over the training split; False if cancelled part-way."""
        cfg, state = self.config, self.state
        seed = _epoch_seed(cfg.seed, stage_index, epoch)
        torch.manual_seed(_rank_seed(seed, self.rank))
        order_gen = torch.Generator().manual_seed(seed)
        noise_gen = make_generator(seed + 1, self.device) if self.noise else None
        n = len(self.train)
        order = torch.randperm(n, generator=order_gen).to(self.device)
        batch_size = min(cfg.batch_size, n)
        n_batches = math.ceil(n / batch_size)
        extra = self._labelled_draws(order_gen, n_batches)        # (n_batches, k) or None
        binary_gen = make_generator(seed + 2, self.device) if cfg.binarize else None
        state.batch, state.batches_per_epoch = 0, n_batches
        sums = _LossSums()
        t0, held = time.perf_counter(), self._held_seconds()
        self.model.train()
        for b in range(n_batches):
            if not self.ddp and self.cancel.is_set():  # DDP: agreed at read-outs, see _read_out
                return False
            index = order[b * batch_size:(b + 1) * batch_size]     # (m,) the global batch, as in one process
            n_shuffled = len(index)
            if extra is not None:
                index = torch.cat([index, extra[b]])                # (m + k,)
            if cfg.lr_schedule == "cosine":
                self._set_lr(epoch * n_batches + b, state.epochs * n_batches)
            sums.add(self._step(index, n_shuffled, binary_gen, noise_gen))
            state.batch, state.step = b + 1, state.step + 1
            state.images_seen += len(index)
            stop = False
            if sums.batches == cfg.log_every or b == n_batches - 1:
                stop = self._read_out(sums)
            self._emit("on_batch_end")
            if stop:
                return False
        state.val_parts = self._validate() if self.val is not None else None
        seconds = time.perf_counter() - t0 - (self._held_seconds() - held)      # held time (a pause) left out
        state.history.append({
            "stage": state.stage, "epoch": epoch + 1, "train": dict(state.epoch_parts),
            "val": state.val_parts, "seconds": round(max(seconds, 0.0), 3),
        })
        return True

    def _step(self, index: Tensor, n_shuffled: int, binary_gen: torch.Generator | None,
              noise_gen: torch.Generator | None) -> dict[str, Tensor]:
        """One optimiser step on the global batch `index`; returns the loss parts (0-d, on the device,
        this process's share of the global batch's mean), left unread: reading syncs the device."""
        cfg = self.config
        x, clean, y, mine = self._local_batch(self.train, index, n_shuffled, binary_gen, noise_gen)
        if self._updates_itself():                              # one process only: see _check_distributed
            out = self.model.update_step(x, target=clean, y=y)
            return {name: value.detach().float() for name, value in {"loss": out.loss, **out.parts}.items()}
        share = mine / len(index)                               # this process's part of the global batch
        with self._autocast():
            out = self._net(x, target=clean, y=y)
        loss = out.loss
        if self.world > 1 and mine * self.world != len(index):
            # Uneven shards (the last batch of an epoch): DDP averages gradients with equal weights,
            # so weight this process's mean loss by its share; the average is then the gradient of
            # the mean over the global batch, as in one process.
            loss = loss * (share * self.world)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        parts: dict[str, Tensor] = {}
        for name, value in {"loss": out.loss, **out.parts}.items():
            value = value.detach().float()
            parts[name] = value * share if self.world > 1 else value   # summed over processes at read-outs
        return parts

    def _updates_itself(self) -> bool:
        updates_itself = getattr(self.model, "updates_itself", None)
        return updates_itself is not None and updates_itself()

    def _read_out(self, sums: _LossSums) -> bool:
        """Publish the loss parts' means since the last read-out (state.parts) and over the epoch so far
        (state.epoch_parts): one device sync. Under DDP the same all-reduce sums the processes' parts
        and counts those asked to cancel, so all stop after the same batch; returns whether to stop."""
        state, since = self.state, sums.batches
        names = list(sums.parts)
        totals = torch.stack([sums.parts[k] for k in names])
        if self.ddp:  # sum the processes' parts; the last entry counts processes asked to cancel
            flag = torch.tensor([float(self.cancel.is_set())], device=totals.device)
            totals = distributed.all_reduce_sum(torch.cat([totals, flag]))
        values = totals.tolist()                                 # one device sync
        read = {k: values[i] / since for i, k in enumerate(names)}
        for k, v in read.items():
            sums.epoch[k] = sums.epoch.get(k, 0.0) + v * since
        sums.epoch_batches += since
        state.parts = read
        state.epoch_parts = {k: v / sums.epoch_batches for k, v in sums.epoch.items()}
        sums.parts, sums.batches = {}, 0
        if not all(math.isfinite(v) for v in read.values()):
            raise TrainingError(f"loss became {read.get('loss')} at step {state.step}; "
                                f"try a smaller learning rate (lr={self.config.lr:g})")
        return self.ddp and values[len(names)] > 0

    def _local_batch(self, data: ImageData, index: Tensor | slice, n_shuffled: int, binary_gen: torch.Generator | None,
                     noise_gen: torch.Generator | None) -> tuple[Tensor, Tensor, Tensor, int]:
        """This process's rows of the global batch `index` (M,): x, clean, y and how many rows are its.

        The global batch is `n_shuffled` permutation rows, then any labelled extras; under DDP each
        process keeps its contiguous slice of each part. Binarisation and corruption are drawn for
        the whole global batch, then sliced, so a row gets the same noise whatever the number of
        processes (M rows of noise cost little next to a forward pass). A process left without rows
        (a last batch smaller than the world) scores one stand-in row and reports 0 rows: it still
        joins the gradient all-reduce but, weighted by 0, adds nothing to it.
        """
        rows, mine = None, None
        if self.world > 1:
            rows, mine = self._my_rows(len(index), n_shuffled)
            if binary_gen is None and self.noise is None:
                index, rows = index[rows], None        # nothing random to draw: convert only these rows
        images = data.as_float(index)
        mine = images.shape[0] if mine is None else mine
        clean = images.view(images.shape[0], *self.shape)           # (M or local, *shape)
        if binary_gen is not None:
            clean = torch.bernoulli(clean, generator=binary_gen)
        x = self.noise(clean, generator=noise_gen) if self.noise else clean
        if rows is not None:
            same = x is clean                          # keep identity: some models treat target is x as clean
            clean = clean[rows]
            x = clean if same else x[rows]
            index = index[rows]
        return x, clean, data.labels[index], mine

    def _my_rows(self, total: int, n_shuffled: int) -> tuple[Tensor, int]:
        """Positions in a global batch of `total` rows (`n_shuffled` first) that this process takes,
        and their number (0 with a stand-in row when there are none)."""
        lo, hi = distributed.shard_bounds(n_shuffled, self.rank, self.world)
        lo2, hi2 = distributed.shard_bounds(total - n_shuffled, self.rank, self.world)
        rows = torch.cat([torch.arange(lo, hi, device=self.device),
                          torch.arange(n_shuffled + lo2, n_shuffled + hi2, device=self.device)])
        if len(rows) == 0:
            return torch.zeros(1, dtype=torch.long, device=self.device), 0
        return rows, len(rows)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _labelled_draws(self, generator: torch.Generator, n_batches: int) -> Tensor | None:
        """Indices of labelled rows to append to each batch (semi-supervised oversampling)."""
        k = self.config.labelled_per_batch
        if not k:
            return None
        labelled = torch.nonzero(self.train.labels.cpu() >= 0).flatten()
        if len(labelled) == 0:
            return None
        pick = torch.randint(len(labelled), (n_batches, k), generator=generator)
        return labelled[pick].to(self.device)

    def _set_lr(self, step: int, total: int) -> None:
        lr = 0.5 * self.config.lr * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    @torch.no_grad()
    def _validate(self) -> dict[str, float]:
        """Mean loss parts on the validation split, corrupted the same way (fixed seed).

        Under DDP each process scores its shard of every validation batch (same noise as in one
        process, see _local_batch) and the row-weighted sums are all-reduced: every process gets the
        mean over the full split, equal to the one-process value up to float summation order.
        """
        model, val = self.model, self.val   # the bare model: no DDP collectives in an eval pass
        model.eval()
        noise_gen = make_generator(self.config.seed + 7, self.device) if self.noise else None
        binary_gen = make_generator(self.config.seed + 8, self.device) if self.config.binarize else None
        totals: dict[str, Tensor] = {}
        n = len(val)
        batch_size = max(self.config.batch_size, 256)
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            index = torch.arange(start, stop, device=self.device) if self.world > 1 else slice(start, stop)
            # weight: the rows here
            x, clean, y, weight = self._local_batch(val, index, stop - start, binary_gen, noise_gen)
            with self._autocast():
                out = model(x, target=clean, y=y)
            for name, value in {"loss": out.loss, **out.parts}.items():
                totals[name] = totals.get(name, 0.0) + value.detach().float() * weight
        if self.ddp:
            names = list(totals)
            summed = distributed.all_reduce_sum(torch.stack([totals[k] for k in names]))
            totals = dict(zip(names, summed))
        model.train()
        return {k: float(v) / n for k, v in totals.items()}

    def _held_seconds(self) -> float:
        """The seconds the callbacks have held the training thread so far (their `held_seconds`, see Callback)."""
        return sum(float(getattr(callback, "held_seconds", 0.0)) for callback in self.callbacks)

    def _emit(self, hook: str) -> None:
        for callback in self.callbacks:
            method = getattr(callback, hook, None)
            if method is not None:
                method(self.state)

    # --- checkpoints (aecore.checkpoint): the file's format and checks live there ------------
    def _save_checkpoint(self, stages: list[str]) -> None:
        if self.checkpoint_path is None or not distributed.is_main():
            return
        state = self.state
        checkpoint.save(self.checkpoint_path, self.model, self.optimizer, {
            "stages": stages, "stage_index": state.stage_index, "epoch": state.epoch,
            "step": state.step, "images_seen": state.images_seen, "history": state.history,
            "train_config": self.config.to_dict(), "model": getattr(self.model, "registry_name", ""),
        })

    def _load_checkpoint(self, stages: list[str]) -> tuple[int, int]:
        """Load the checked checkpoint's model and counters; returns the (stage, epoch) to start at."""
        saved = checkpoint.load(self.checkpoint_path, self.model, stages, device=self.device, ddp=self.ddp,
                                max_epochs=MAX_EPOCHS)
        self._pending_optimizer = saved.optimizer
        state = self.state
        state.history, state.step, state.images_seen = saved.history, saved.step, saved.images_seen
        stage_index, epoch = saved.stage_index, saved.epoch
        # Stages finished before the checkpoint's stage need no replay: their end_stage effects (e.g.
        # filter snapshots) live in the model's buffers, restored above. Only a checkpoint taken at the
        # last epoch of a stage still owes that stage's end_stage.
        if epoch >= self._epochs_for(stages[stage_index], len(stages)):
            if hasattr(self.model, "end_stage"):
                self.model.end_stage(stages[stage_index])
            stage_index, epoch = stage_index + 1, 0
            self._pending_optimizer = None
        return stage_index, epoch


def make_adam(params: Iterable[torch.nn.Parameter], *, lr: float, weight_decay: float = 0.0) -> torch.optim.Adam:
    """The trainer's optimiser: fused Adam, one kernel for all parameters (faster per step than
    foreach on the CPU: bench/README.md), or the default where the device or dtype has no fused kernel."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def fit(model: torch.nn.Module, train: ImageData, *, config: TrainConfig | None = None, **kwargs: Any) -> TrainResult:
    """Convenience: `Trainer(model, train, config=config, **kwargs).fit()`."""
    resume = kwargs.pop("resume", False)
    return Trainer(model, train, config=config, **kwargs).fit(resume=resume)
