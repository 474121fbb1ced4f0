"""Watch a model learn: snapshots of fixed test images and of a 2-D code map while it trains, and
pause / step / resume of a training run. Two trainer callbacks, so `aecore.train` stays model-agnostic.

`Snapshots` (what the Train page draws while a job runs):
  - a fixed, seeded set of RECON_IMAGES test images (and, for a denoising run, their corrupted copies,
    drawn once with a fixed seed), reconstructed by the model as it trains;
  - the codes of a fixed, seeded subset of MAP_POINTS test images, projected to 2-D: the code itself
    when it has at most 2 units, else PCA **refitted on those codes at every snapshot** (the code
    space moves a lot while a model learns; a PCA fitted once early would show later codes badly),
    each axis's sign turned to agree with the previous snapshot's, so the map does not flip about.
  When: one before the first batch ("untrained"), one at the end of every epoch, and in an epoch long
  enough for it more at batch ends, evenly spread, at most one per MIN_INTERVAL seconds, so that all of
  an epoch's snapshots together take at most SHARE of its time (from what the last snapshot took and
  the time a batch takes; an epoch too short for that gets the one at its end only). Each runs under
  `torch.no_grad()` with the model in eval mode (every module's own mode is put back after) and the
  RNG state forked, on the fixed images only: a watched run trains exactly as an unwatched one.

`Control` holds the training thread at batch and epoch ends while paused:
  - pause: at the next batch end (a pause landing on an epoch's last batch is held at the epoch's end,
    after its validation, so "step one epoch" from there is a whole epoch);
  - step ("epoch"): run to the end of the epoch (from an epoch's end: exactly one epoch), then hold;
  - step ("batch", n): run n more batches, then hold;
  - resume: go on. A pause never holds after the run's last epoch: the run then simply ends.
  A Stop (the job's cancel event) ends the hold at once (the trainer then stops before its next
  batch). A run may be held for MAX_PAUSE in all, over all its pauses and steps together (a paused run
  keeps one of the machine's training slots, and a visitor may have closed the tab): a hold that
  spends what is left ends by itself, and once it is spent `pause()` and `step()` are refused (they
  return False; the job tells the page in a notice) and the run goes on to its end.
  The time held (from a hold's first on_hold hook to its end) is `held_seconds`, which the trainer
  leaves out of the run's recorded training time (`aecore.train.Callback`).

Figures for the page: `grid` (the labelled picture: test images, then the model's output at the
last few snapshots) and `map_figure` (plotly). Nothing here knows any model by name.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

from aecore.data.base import ImageData
from aecore.errors import ConfigError
from aecore.noise import make_generator, parse_noise
from aecore.train import Callback, TrainState

RECON_IMAGES = 8                 # fixed test images reconstructed at each snapshot
MAP_POINTS = 1000                # fixed test images whose codes make the map
MIN_INTERVAL = 1.0               # s: mid-epoch snapshots at most this often (the page polls every second)
SHARE = 0.03                     # an epoch's snapshots take at most this share of it (but one at its end always)
MAX_KEPT = 64                    # milestone snapshots kept per run (older ones thinned, the first kept)
HISTORY_ROWS = 4                 # snapshots the grid shows below the test images
MAX_PAUSE = 15 * 60.0            # s: a run may be held (paused) this long in all, over all its pauses
STEP_BATCHES = 10                # the Train page's "step N batches"
POLL = 0.2                       # s: a held thread looks at the Stop at least this often
UNITS = ("epoch", "batch")

log = logging.getLogger("aecore.app")


# --- what is watched -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Probe:
    """The fixed test images of one run (CPU tensors): reconstructed, and mapped."""

    images: Tensor                  # (B, *shape) float in [0, 1]: the test images shown
    inputs: Tensor                  # (B, *shape): what the model is given (corrupted for a denoising run)
    noisy: bool                     # inputs are corrupted copies of the images
    map_images: Tensor              # (M, *shape) uint8: the map's images
    map_labels: np.ndarray          # (M,) int64 class of each map point (-1: none)
    classes: tuple[str, ...]
    index: Tensor                   # (B,) their test-split indices
    map_index: Tensor               # (M,)

    @classmethod
    def of(cls, test: ImageData, *, seed: int = 0, noise: str | None = None, count: int = RECON_IMAGES,
           map_points: int = MAP_POINTS) -> "Probe":
        """Seeded choices from the test split: `count` images to reconstruct, `map_points` to map
        (the same for the same split and seed, whatever the model)."""
        n = len(test)
        if n == 0:
            raise ConfigError("the test split has no images to watch")
        generator = torch.Generator().manual_seed(int(seed))
        order = torch.randperm(n, generator=generator)
        index = order[:count]
        map_index = torch.sort(torch.randperm(n, generator=generator)[:map_points]).values
        cpu = test.to("cpu")
        images = cpu.as_float(index)
        inputs, noisy = images, False
        corrupt = parse_noise(noise)
        if corrupt is not None:
            inputs, noisy = corrupt(images, generator=make_generator(int(seed) + 11, "cpu")), True
        return cls(images=images, inputs=inputs, noisy=noisy, map_images=cpu.images[map_index].clone(),
                   map_labels=cpu.labels[map_index].numpy().astype(np.int64), classes=tuple(test.classes),
                   index=index, map_index=map_index)


@dataclass(frozen=True)
class Snapshot:
    """The model at one moment: its outputs for the probe's images and the map's coordinates."""

    stage: str
    n_stages: int
    epoch: int                      # epochs finished in the stage
    epochs: int                     # epochs the stage runs
    batch: int                      # batches done in the current epoch (0 at an epoch's end)
    batches_per_epoch: int
    step: int                       # optimiser steps over the whole run
    milestone: bool                 # before training, or at an epoch's end
    recon: Tensor                   # (B, *shape) uint8: the model's outputs
    coords: np.ndarray              # (M, 2) float32
    seconds: float                  # what taking it cost

    @property
    def label(self) -> str:
        """'untrained', 'epoch 3' (its end), 'epoch 4, 40 %' (part-way); a greedy stage is named first."""
        if self.step == 0:
            return "untrained"
        stage = f"{self.stage} " if self.n_stages > 1 else ""
        if self.batch == 0:
            return f"{stage}epoch {self.epoch}"
        done = 100 * self.batch / max(self.batches_per_epoch, 1)
        return f"{stage}epoch {self.epoch + 1}, {done:.0f} %"


@dataclass(frozen=True)
class WatchView:
    """What the page draws: the probe and the snapshots so far (milestones, then the latest if newer)."""

    probe: Probe
    snapshots: tuple[Snapshot, ...]
    code_dim: int
    cost: float                     # s: all snapshots so far
    count: int                      # snapshots taken (some may be thinned out of `snapshots`)

    @property
    def latest(self) -> Snapshot | None:
        return self.snapshots[-1] if self.snapshots else None

    @property
    def method(self) -> str:
        return "code" if self.code_dim <= 2 else "pca"


# --- the maths of one snapshot ------------------------------------------------------------------------
SQUARING_MAX = 128               # PCA by repeated squaring up to this many code units (or points); above, iteration
ITERATIONS = 12                  # ... block iterations (BLOCK directions), from the axes of the previous map
BLOCK = 8


def project_2d(codes: np.ndarray, previous: np.ndarray | None = None) -> np.ndarray:
    """(M, d) codes -> (M, 2): the code itself when d <= 2 (padded with zeros), else its first two
    principal components (PCA of these codes, float64), each axis's sign chosen to agree with
    `previous` (the same points' coordinates at the snapshot before), so the map does not flip.

    Matrix products only (repeated squaring, or block iteration for codes and maps both over
    SQUARING_MAX), on one thread: with an eigensolver (numpy's or torch's LAPACK) the epochs after a
    snapshot ran some 5 % slower on the 2-core machine, and the many small products on two threads
    waited for each other on a busy machine, up to a time slice each: 320 ms instead of 1 ms for a
    32-unit code (bench/training_view_overhead.py, 2026-12-03)."""
    codes = torch.as_tensor(np.asarray(codes)).double().reshape(len(codes), -1)
    n, d = codes.shape
    if d <= 2:
        return torch.nn.functional.pad(codes, (0, 2 - d)).float().numpy()
    with one_thread():
        coords = _principal_coords(codes, previous)
    if previous is not None and previous.shape == coords.shape:
        coords = coords * np.where(np.sum(coords * previous, axis=0) < 0, -1.0, 1.0)
    return coords.astype(np.float32)


@contextlib.contextmanager
def one_thread():
    """torch computes on one thread in this block (this thread's setting, put back after)."""
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _principal_coords(codes: Tensor, previous: np.ndarray | None) -> np.ndarray:
    """(n, d) float64 codes, d > 2 -> (n, 2) their coordinates on the first two principal axes."""
    n, d = codes.shape
    centred = codes - codes.mean(0)
    if d <= SQUARING_MAX:
        cov = centred.T @ centred
        axes = _leading(cov)
        coords = centred @ _ritz(axes.T @ cov @ axes, axes)[0]
    elif n <= SQUARING_MAX:                                               # fewer points: their Gram matrix
        gram = centred @ centred.T
        vectors = _leading(gram)
        vectors, values = _ritz(vectors.T @ gram @ vectors, vectors)
        coords = vectors * values.clamp_min(0).sqrt()
    else:                                                                 # many units and points: iterate
        block = _start(d, centred.pow(2).sum(0), BLOCK)
        if previous is not None and previous.shape == (n, 2):            # the axes that best gave the last map
            block[:, :2] = centred.T @ torch.as_tensor(previous, dtype=codes.dtype)
        block = _orthonormal(block)
        for _ in range(ITERATIONS):
            block = _orthonormal(centred.T @ (centred @ block))
        projected = centred @ block
        small = projected.T @ projected                                   # (BLOCK, BLOCK): exact from here
        axes = block @ _leading(small)
        projected = centred @ axes
        coords = centred @ _ritz(projected.T @ projected, axes)[0]
    return torch.nan_to_num(coords).numpy()


def _start(k: int, diagonal: Tensor, width: int = 2) -> Tensor:
    """A fixed (k, width) start: the axes of largest variance, plus a little of everything."""
    width = min(width, k)
    top = torch.argsort(diagonal, descending=True)[:width]
    v = torch.linspace(0.01, 0.02, k, dtype=diagonal.dtype)[:, None].repeat(1, width)
    v[top, torch.arange(width)] += 1.0
    return v


def _leading(m: Tensor, squarings: int = 8) -> Tensor:
    """(k, 2) orthonormal: the two leading eigenvectors of a symmetric positive semi-definite (k, k)
    matrix, each found as the dominant column of m^(2^squarings) (the first, then with it deflated)."""
    vectors = []
    for _ in range(2):
        p = m / torch.diagonal(m).sum().clamp_min(1e-300)
        for _ in range(squarings):
            p = p @ p
            p = p / torch.diagonal(p).sum().clamp_min(1e-300)
            p = torch.where(p.abs() < 1e-150, 0.0, p)       # what fades out: zeros, not slow denormal floats
        u = p[:, int(torch.argmax(torch.diagonal(p)))]
        u = u / u.norm().clamp_min(1e-300)
        vectors.append(u)
        m = m - (u @ m @ u) * torch.outer(u, u)
    return _orthonormal(torch.stack(vectors, dim=1))


def _ritz(small: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """Rotate the orthonormal (k, 2) `v` within its plane to diagonalise the matrix there (`small`, 2 x 2:
    vᵀ m v), in closed form: the plane's two principal directions, larger first, and their values (2,)."""
    a, b, c = small[0, 0], small[0, 1], small[1, 1]
    theta = 0.5 * torch.atan2(2 * b, a - c)
    cos, sin = torch.cos(theta), torch.sin(theta)
    v = v @ torch.stack([torch.stack([cos, -sin]), torch.stack([sin, cos])])
    values = torch.stack([a * cos**2 + 2 * b * cos * sin + c * sin**2, a * sin**2 - 2 * b * cos * sin + c * cos**2])
    return v, values


def _orthonormal(v: Tensor) -> Tensor:
    """The columns made orthonormal (Gram-Schmidt, twice over); a column with nothing left becomes a
    unit vector orthogonal to those before it."""
    done: list[Tensor] = []
    for j in range(v.shape[1]):
        column = v[:, j]
        size = float(column.norm())
        for _ in range(2):
            if done:
                basis = torch.stack(done, dim=1)
                column = column - basis @ (basis.T @ column)
        if not float(column.norm()) > 1e-9 * max(size, 1e-300):
            column = torch.zeros_like(v[:, j])
            column[len(done) % len(column)] = 1.0
            if done:
                basis = torch.stack(done, dim=1)
                for _ in range(2):
                    column = column - basis @ (basis.T @ column)
        done.append(column / column.norm().clamp_min(1e-300))
    return torch.stack(done, dim=1)


def _as_uint8(x: Tensor) -> Tensor:
    return (x.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)


@torch.no_grad()
def take(model: nn.Module, inputs: Tensor, map_images: Tensor, *, batch_size: int = 500) -> tuple[Tensor, Tensor]:
    """(outputs (B, *shape) uint8 on the CPU, codes (M, d) float on the CPU) of the model as it is now,
    in eval mode with every module's own mode put back after; `inputs` float, `map_images` uint8 on the
    model's device. The RNG state is forked: nothing here changes what training draws next."""
    modules = list(model.modules())
    modes = [m.training for m in modules]
    device = inputs.device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else [], enabled=True):
        model.eval()
        try:
            recon = _as_uint8(model.reconstruct(inputs).reshape(inputs.shape))
            codes = []
            for start in range(0, len(map_images), batch_size):
                chunk = map_images[start:start + batch_size].float().div_(255.0)
                codes.append(model.encode(chunk).reshape(chunk.shape[0], -1).float().cpu())
        finally:
            for module, mode in zip(modules, modes):
                module.training = mode
    return recon, torch.cat(codes)


# --- the snapshot callback ----------------------------------------------------------------------------
class Snapshots(Callback):
    """Trainer callback taking `Snapshot`s of `model` on `probe` (see the module docstring: when, and
    at what cost). `view()` is safe to call from any thread; `close()` lets go of the model."""

    def __init__(self, model: nn.Module, probe: Probe, *, min_interval: float = MIN_INTERVAL,
                 share: float = SHARE, max_kept: int = MAX_KEPT):
        self.model: nn.Module | None = model
        self.probe = probe
        self.min_interval, self.share, self.max_kept = min_interval, share, max_kept
        self._lock = threading.Lock()
        self._milestones: list[Snapshot] = []
        self._latest: Snapshot | None = None
        self._cost, self._count, self._code_dim = 0.0, 0, 0
        self._device: tuple[Tensor, Tensor] | None = None     # inputs, map images on the model's device
        self._last_end = 0.0                                   # perf_counter when the last one finished
        self._last_cost = 0.0                                  # s: what the last one took
        self._tick: float | None = None                        # perf_counter at the last batch's end
        self._batch_time: float | None = None                  # s per batch (a running mean, pauses left out)
        self.error: str | None = None                          # why snapshots stopped (training goes on)

    # hooks
    def on_train_begin(self, state: TrainState) -> None:
        self.capture(state, milestone=True)

    def on_batch_end(self, state: TrainState) -> None:
        now = time.perf_counter()
        last, self._tick = self._tick, now
        if last is not None and state.batch > 1:               # a batch's time; one 10 x the usual (a pause) is not
            dt = now - max(last, self._last_end)
            mean = self._batch_time
            if mean is None or dt < 10 * mean:
                self._batch_time = dt if mean is None else 0.9 * mean + 0.1 * dt
        if state.batch >= state.batches_per_epoch or self._batch_time is None:   # the epoch's end: taken there
            return
        gap = self.mid_epoch_gap(state.batches_per_epoch * self._batch_time)
        left = (state.batches_per_epoch - state.batch) * self._batch_time
        if gap is not None and now - self._last_end >= gap and left >= gap / 2:
            self.capture(state, milestone=False)

    def mid_epoch_gap(self, epoch_seconds: float) -> float | None:
        """Seconds between snapshots within an epoch of `epoch_seconds`, so that they and the one at its end
        take at most `share` of it and come at most every `min_interval` s; None: the one at its end only."""
        cost = max(self._last_cost, 1e-6)
        extra = math.floor(self.share * epoch_seconds / cost) - 1        # besides the one at the epoch's end
        if extra < 1:
            return None
        return max(self.min_interval, epoch_seconds / (extra + 1))

    def on_epoch_end(self, state: TrainState) -> None:
        self.capture(state, milestone=True)

    def capture_if_stale(self, state: TrainState) -> None:
        """A snapshot of the model as it is now, unless the latest is of this very step (a pause's)."""
        with self._lock:
            latest = self._latest
        if latest is None or latest.step != state.step:
            self.capture(state, milestone=False)

    # the work
    def capture(self, state: TrainState, *, milestone: bool) -> Snapshot | None:
        """Take a snapshot now. A failure ends the watching, never the training: it is kept in `error`."""
        if self.model is None:
            return None
        try:
            return self._capture(state, milestone=milestone)
        except Exception as err:  # noqa: BLE001 - the run matters more than its pictures
            log.warning("snapshots stopped: %s", err, exc_info=True)
            self.error = f"{type(err).__name__}: {err}"
            self.close()
            return None

    def _capture(self, state: TrainState, *, milestone: bool) -> Snapshot:
        model = self.model
        t0 = time.perf_counter()
        if self._device is None:
            device = next((p.device for p in model.parameters()), torch.device("cpu"))
            shape = tuple(getattr(getattr(model, "config", None), "input_shape", self.probe.inputs.shape[1:]))
            self._device = (self.probe.inputs.to(device).reshape(-1, *shape),
                            self.probe.map_images.to(device).reshape(-1, *shape))
        inputs, map_images = self._device
        recon, codes = take(model, inputs, map_images)      # (B, *shape) uint8, (M, d)
        recon = recon.reshape(self.probe.images.shape)
        with self._lock:
            previous = self._latest.coords if self._latest is not None else None
        coords = project_2d(codes.numpy(), previous)
        at_end = milestone and state.step > 0
        seconds = time.perf_counter() - t0
        snap = Snapshot(stage=state.stage, n_stages=state.n_stages, epoch=state.epoch, epochs=state.epochs,
                        batch=0 if at_end else state.batch, batches_per_epoch=state.batches_per_epoch,
                        step=state.step, milestone=milestone, recon=recon, coords=coords, seconds=seconds)
        with self._lock:
            self._code_dim = int(codes.shape[1])
            self._latest = snap
            if milestone:
                self._milestones.append(snap)
                if len(self._milestones) > self.max_kept:       # keep the first, thin the rest
                    first, rest = self._milestones[0], self._milestones[1:]
                    self._milestones = [first] + rest[(len(rest) - 1) % 2::2]   # the newest stays
            self._cost += seconds
            self._count += 1
        self._last_end = time.perf_counter()
        self._last_cost = seconds
        return snap

    def view(self) -> WatchView | None:
        """The probe and the snapshots so far; None before the first one."""
        with self._lock:
            if self._latest is None:
                return None
            snaps = list(self._milestones)
            if not snaps or snaps[-1] is not self._latest:
                snaps.append(self._latest)
            return WatchView(probe=self.probe, snapshots=tuple(snaps), code_dim=self._code_dim,
                             cost=self._cost, count=self._count)

    def close(self) -> None:
        """Let go of the model, the device copies and the map's images (the snapshots stay for the page)."""
        self.model, self._device = None, None
        with self._lock:
            self.probe = dataclasses.replace(self.probe, map_images=self.probe.map_images[:0])


# --- pause, step, resume ----------------------------------------------------------------------------------
class Control(Callback):
    """Trainer callback that holds the training thread while paused (see the module docstring).
    Its methods are called from the page's thread; the hooks run in the training thread.
    `max_pause`: the run's pause budget, seconds held in all (default: MAX_PAUSE as it is now)."""

    def __init__(self, cancel: threading.Event | None = None, *, max_pause: float | None = None):
        self.cancel = cancel or threading.Event()
        self.max_pause = float(MAX_PAUSE if max_pause is None else max_pause)
        self.on_hold: list[Callable[[TrainState], None]] = []   # run in the training thread as a hold begins
        self._cond = threading.Condition()
        self._paused = False             # asked to hold at the next boundary
        self._holding = False            # the training thread waits now
        self._at_epoch_end = False       # ... at an epoch's end (else after a batch)
        self._step: tuple[str, int] | None = None    # (unit, boundaries left) of a step under way
        self._ended_by_time = 0          # holds that the pause budget ended
        self._refused = 0                # pauses and steps refused, the budget spent
        self._held = 0.0                 # s: held in all, holds that ended
        self._hold_began: float | None = None        # time.monotonic() as the hold under way began

    # --- the page's side
    def pause(self) -> bool:
        """Hold at the next boundary; False (nothing changes) when the run's pause budget is spent."""
        with self._cond:
            if self._spent():
                self._refused += 1
                return False
            self._paused, self._step = True, None
            self._cond.notify_all()
            return True

    def resume(self) -> None:
        with self._cond:
            self._paused, self._step = False, None
            self._cond.notify_all()

    def step(self, unit: str = "epoch", count: int = 1) -> bool:
        """Go on for `count` epochs ('epoch': to the end of the current one first) or batches, then hold;
        False (nothing changes) when the run's pause budget is spent (it could not hold again)."""
        if unit not in UNITS:
            raise ConfigError(f"step by {' or '.join(UNITS)}, not {unit!r}")
        if count < 1:
            raise ConfigError(f"step at least one {unit}, got {count}")
        with self._cond:
            if self._spent():
                self._refused += 1
                return False
            self._paused, self._step = False, (unit, int(count))
            self._cond.notify_all()
            return True

    def wake(self) -> None:
        """Make a hold look at the Stop now (the job calls it on a Stop)."""
        with self._cond:
            self._cond.notify_all()

    @property
    def state(self) -> str:
        """'running', 'pausing' (asked, not held yet), 'paused' (held), or 'stepping'."""
        with self._cond:
            if self._holding:
                return "paused"
            if self._paused:
                return "pausing"
            return "stepping" if self._step is not None else "running"

    @property
    def at_epoch_end(self) -> bool:
        """Held at an epoch's end (a step of one epoch is then a whole epoch)."""
        with self._cond:
            return self._holding and self._at_epoch_end

    @property
    def ended_by_time(self) -> int:
        """Holds that the pause budget ended (at most one: after it, nothing holds)."""
        with self._cond:
            return self._ended_by_time

    @property
    def refused(self) -> int:
        """Pauses and steps refused because the pause budget was spent."""
        with self._cond:
            return self._refused

    @property
    def held_seconds(self) -> float:
        """Seconds the training thread has been held in all, the hold under way included (the trainer
        leaves them out of the training time: `aecore.train.Callback`)."""
        with self._cond:
            return self._held_now()

    @property
    def pause_left(self) -> float:
        """Seconds of the run's pause budget (`max_pause`) left; 0 once spent."""
        with self._cond:
            return max(0.0, self.max_pause - self._held_now())

    @property
    def spent(self) -> bool:
        """The pause budget is spent: the run is not held again."""
        with self._cond:
            return self._spent()

    def _held_now(self) -> float:
        began = self._hold_began
        return self._held + (time.monotonic() - began if began is not None else 0.0)

    def _spent(self) -> bool:
        return self._held_now() >= self.max_pause

    # --- the training thread's side
    def on_batch_end(self, state: TrainState) -> None:
        self._count("batch")
        if state.batch >= state.batches_per_epoch:           # the epoch's end comes next: hold there
            return
        self._hold(state, at_epoch_end=False)

    def on_epoch_end(self, state: TrainState) -> None:
        self._count("epoch")
        if state.epoch >= state.epochs and state.stage_index >= state.n_stages - 1:
            return                                             # the run's last epoch: nothing to hold for
        self._hold(state, at_epoch_end=True)

    def _count(self, unit: str) -> None:
        with self._cond:
            if self._step is not None and self._step[0] == unit:
                left = self._step[1] - 1
                self._step = (unit, left) if left > 0 else None
                if left <= 0:
                    self._paused = True

    def _hold(self, state: TrainState, *, at_epoch_end: bool) -> None:
        with self._cond:
            if not self._paused or self.cancel.is_set():
                return
            if self._spent():                  # asked before the budget ran out (a step's end): go on
                self._paused, self._step = False, None
                return
            began = self._hold_began = time.monotonic()
            deadline = began + (self.max_pause - self._held)
        try:
            for hook in self.on_hold:        # first: once the page says "paused", its pictures show the held model
                hook(state)
            with self._cond:
                self._holding, self._at_epoch_end = True, at_epoch_end
                while self._paused and not self.cancel.is_set():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        self._paused, self._step = False, None
                        self._ended_by_time += 1
                        break
                    self._cond.wait(min(POLL, left))
        finally:
            with self._cond:
                self._holding, self._hold_began = False, None
                self._held += time.monotonic() - began


# --- pictures -------------------------------------------------------------------------------------------
def grid_rows(view: WatchView, *, upto: int | None = None, rows: int = HISTORY_ROWS) -> tuple[list[Tensor], list[str]]:
    """The grid's rows and their names: the test images (and the corrupted inputs of a denoising run),
    then the model's outputs at `rows` snapshots up to number `upto` of `view.snapshots` (default: the
    latest): the first one (untrained, to compare with) and the last `rows - 1`."""
    probe = view.probe
    out, names = [probe.images], ["test image"]
    if probe.noisy:
        out.append(probe.inputs.clamp(0, 1))
        names.append("noisy input")
    end = len(view.snapshots) if upto is None else max(0, min(upto, len(view.snapshots) - 1)) + 1
    shown = list(view.snapshots[:end])
    if len(shown) > rows:
        shown = shown[:1] + shown[len(shown) - (rows - 1):] if rows > 1 else shown[-1:]
    for snap in shown:
        out.append(snap.recon.float() / 255.0)
        names.append(snap.label)
    return out, names


def grid(view: WatchView, *, scale: int = 2, per_band: int = RECON_IMAGES, upto: int | None = None,
         rows: int = HISTORY_ROWS) -> np.ndarray:
    """(H, W, 3) uint8: `grid_rows` as one picture with each row's name written at its left."""
    from aecore.lab.reconstruct import comparison_grid

    images, names = grid_rows(view, upto=upto, rows=rows)
    return comparison_grid(images, per_band=per_band, scale=scale, row_labels=names)


def axis_names(view: WatchView) -> list[str]:
    if view.method == "code":
        return [f"code unit {i}" if i < view.code_dim else f"(none: a {view.code_dim}-D code)" for i in range(2)]
    return ["PC 1 of the codes", "PC 2 of the codes"]


def map_figure(view: WatchView, *, index: int | None = None, height: int = 420) -> Any:
    """Plotly scatter of the map at snapshot number `index` (default: the latest), one trace per class."""
    import plotly.graph_objects as go

    from aecore.lab.latent import class_colours

    snaps = view.snapshots
    snap = snaps[-1] if index is None else snaps[max(0, min(index, len(snaps) - 1))]
    probe = view.probe
    labels, classes = probe.map_labels, probe.classes
    colours = class_colours(len(classes))
    names = axis_names(view)
    fig = go.Figure()
    groups = [(str(name), np.nonzero(labels == k)[0], colours[k]) for k, name in enumerate(classes)]
    groups.append(("unlabelled", np.nonzero((labels < 0) | (labels >= len(classes)))[0], "#999999"))
    for name, rows, colour in groups:
        if rows.size:
            fig.add_trace(go.Scatter(x=snap.coords[rows, 0], y=snap.coords[rows, 1], mode="markers", name=name,
                                     customdata=probe.map_index.numpy()[rows],
                                     hovertemplate=f"#%{{customdata}} · {name}<extra></extra>",
                                     marker=dict(size=5, color=colour, opacity=0.75)))
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=40, b=10), xaxis_title=names[0],
                      yaxis_title=names[1], legend=dict(itemsizing="constant", orientation="v", x=1.02, y=1.0),
                      title=f"Codes of {len(labels):,} test images — {snap.label}")
    return fig


def describe(view: WatchView) -> str:
    """One sentence on what the map is (plain text)."""
    n = len(view.probe.map_labels)
    if view.method == "code":
        return (f"Each dot is the {view.code_dim}-D code of one of {n:,} fixed test images, drawn on the code's "
                "own axes, coloured by class.")
    return (f"Each dot is the code ({view.code_dim} units) of one of {n:,} fixed test images, projected on the "
            "first two principal components of those codes, refitted at every snapshot (axis signs kept "
            "from one snapshot to the next), coloured by class.")


def step_label(at_epoch_end: bool) -> str:
    return "Step one epoch" if at_epoch_end else "Step to the epoch's end"


__all__ = ["Control", "HISTORY_ROWS", "MAP_POINTS", "Probe", "RECON_IMAGES", "STEP_BATCHES", "Snapshot",
           "Snapshots", "WatchView", "describe", "grid", "grid_rows", "map_figure", "project_2d", "step_label",
           "take"]

