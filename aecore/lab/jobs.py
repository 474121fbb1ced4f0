"""Training from the app: one background thread per job, live loss history, a safe save at the end.

Streamlit reruns a page script on every click, and a browser tab may close at any moment, so a
training run cannot live in the script: a `TrainingJob` owns a thread running `aecore.train.Trainer`
and the page only polls `job.snapshot()` (a copy taken under the job's lock). Jobs live in a
process-wide registry keyed by a random id; a page keeps its own job's id in its session state, so
two browser sessions never see (or stop) each other's run.

The end of a run is the same whether anyone is watching or not, and the same as the CLI's and the
zoo's (`aecore.pipeline`): the model is measured on the test split (`aecore.evaluate.evaluate`),
saved with `aecore.store.save_model` (new folder, then an atomic swap) to `<user models>/<name>`,
and given a PCA latent map (`maps.npz`) so every page can show it at once. A name that is already
taken is never overwritten: the job takes `name-2`, `name-3`, ... (or refuses, if asked to). A
stopped run is saved only when at least one epoch finished, with the weights of the last finished
epoch (read back from the trainer's per-epoch checkpoint).

Limits keep one classroom machine usable: epochs, code size, images, parameters, concurrent jobs.

What a visitor may train on (the app serves a whole class; the operator who starts it decides):
the registry datasets, folders under the roots the operator allows ($AECORE_FOLDER_ROOTS, none by
default; `aecore.paths.check_allowed_folder`), and archives they upload (`store_upload`: at most
MAX_UPLOAD_BYTES, kept under `uploads_dir()` with a random name, for at most a day and UPLOADS_CAP
bytes in all). The check runs before the path is even looked at, and the job trains on the resolved
path. The `aecore train` command is the operator's own tool and is not restricted.

Stopping, and the training slots. At most MAX_CONCURRENT jobs hold a *slot* at once; a job holds one
while its status is queued, loading, training or measuring AND no Stop was asked for. So a Stop frees
the slot at once, in every state, and a new run can start; what the stopped job still does is short
and bounded:
  - queued: nothing (it becomes "stopped" on the spot);
  - loading: the load runs in a daemon worker thread that the job waits on with a short poll; on a
    Stop the job leaves it behind ("stopped", nothing saved) -- a load stuck for good (a FIFO, a hung
    network mount) can never pin the job. Past LOAD_TIMEOUT the job fails with a message naming it;
  - training: the trainer checks the Stop every batch (one more batch at most), then saves the last
    finished epoch as before (nothing when no epoch finished);
  - measuring: also in a worker thread; after a Stop it gets STOP_GRACE seconds more, then the model
    is saved without test metrics (the user's model is kept). Past MEASURE_TIMEOUT likewise;
  - saving (a few atomic file writes) never holds a slot: a Stop there lets the save finish.
A worker thread left behind only ever fills its own result box, which nothing reads any more: it
never writes into the job's state and never saves a model (saving is the job thread's alone).

Watching and pausing (`aecore.lab.watch`): a job takes snapshots of the model on fixed test images
(their reconstructions, a 2-D map of codes) as it trains, for the Train page, and can be paused,
stepped (to the end of the epoch, or N batches) and resumed: `pause()`, `step()`, `resume()`. Both are
trainer callbacks, so the trainer knows nothing of them. A Stop ends a pause at once, as any Stop.
The time a run is held is not training time: the trainer leaves the Control's `held_seconds` out of
the epochs' seconds (so out of metrics.json's "training" seconds), and the job out of `train_seconds`.

A paused run and its slot. A paused run still holds its slot (its thread, its model and its data stay
in memory, ready to go on), so a run may be paused for at most `watch.MAX_PAUSE` in all, over all its
pauses (and the holds after its steps) together: the hold that spends it ends by itself (the run goes
on), and after that `pause()` and `step()` are refused (they return False, and the job's snapshot
carries a notice saying why; `JobSnapshot.pause_left` is what is left of it).
But a paused run that nobody watches any more gives its slot up: every `snapshot()` (the Train page
polls one every second while it shows the run) stamps the job as seen, and a run that is paused
(held) and has not been seen for UNWATCHED_PAUSE seconds -- its tab was closed, or its visitor went
to another page -- is stopped, exactly as by its Stop button: it is saved with the weights of its last
finished epoch (nothing, if no epoch finished), and its slot is free at once. The job's pause guard (a
small thread, started at its first pause) applies the rule within GUARD_POLL s; `start()` and
`slot_holders()` apply it too before they count the slots, so a visitor refused for want of a slot
is never refused because of such a run: it is the one that yields. Pause, Step and Resume are
clicked on that very page, so a run someone works with is seen every second.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import re
import shutil
import stat
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal

import torch

from aecore.config import short_repr
from aecore.data import dataset_info, load_dataset, split_off
from aecore.data.base import ImageData
from aecore.device import bf16_problem as device_bf16_problem
from aecore.device import pick_device
from aecore.errors import AecoreError, ConfigError, DataError
from aecore.lab import watch as watching
from aecore.lab.malloc import training_allocations
from aecore.lab.serving import use_machine_threads
from aecore.models import (GENERATIVE, GREEDY_STAGES, RANKED_CODE, SEMI_SUPERVISED, get_model_class, has_role,
                           list_models, make_config, models_with)
from aecore.models.registry import check_fits_memory
from aecore.paths import allowed_folder_roots, check_allowed_folder, inside, uploads_dir, user_model_path
from aecore.train import CHECKPOINT_NAME, PRECISIONS, Callback, TrainConfig, Trainer, TrainState

log = logging.getLogger("aecore.app")

MAX_EPOCHS = 200
MAX_LATENT = 1024
LEARNING_RATES = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)   # the Train page's choices
MAX_CONCURRENT = 2               # running jobs per process (one CPU machine serves a whole class)
MAX_TRAIN_IMAGES = 60_000
MIN_TRAIN_IMAGES = 100
MAX_EVAL_IMAGES = 10_000
MAX_FOLDER_SIZE = 64             # folder: images are resized to at most 64 x 64
MAX_PARAMETERS = 50_000_000
MAX_BATCH = 1024
MAX_NAME = 64
MAX_POINTS = 4000                # live loss read-outs kept per job (older ones thinned)
MAX_KEPT_JOBS = 32               # finished jobs remembered (for a page that polls late)
VAL_FRACTION = 0.1
SEMI_LABELLED_PER_BATCH = 16     # as the zoo's hyper-semi recipes
NAME_RE = re.compile(r"[A-Za-z0-9_-]+")
LABEL_BUDGETS = (10, 100, 1000, None)   # None = every training label

# stopping and time limits (see the module docstring: which statuses hold a slot)
LOAD_TIMEOUT = 120.0             # s: loading a job's data (training and test split); past it the job fails
MEASURE_TIMEOUT = 600.0          # s: measuring on the test split (+ the semi baselines); then saved unmeasured
STOP_GRACE = 2.0                 # s: after a Stop, the test measurement may still finish within this
POLL = 0.1                       # s: how often a job waiting on a worker thread looks at its Stop
SLOT_STATUSES: tuple[str, ...] = ("queued", "loading", "training", "measuring")
UNWATCHED_PAUSE = 90.0           # s: a paused run not seen (`snapshot()`) for this long is stopped and saved,
                                 # giving its slot up (a background tab's browser may poll only once a minute)
GUARD_POLL = 1.0                 # s: how often a paused run's guard looks at when it was seen last

# archives visitors upload (pages/train.py)
MAX_UPLOAD_BYTES = 200 * 1024 * 1024       # one upload (.zip / .tar.gz / .tar)
MAX_UPLOAD_UNPACKED = 1024 * 1024 * 1024   # the files inside one archive, unpacked
MAX_UPLOAD_MEMBERS = 200_000               # files in one archive
UPLOAD_MAX_AGE = 24 * 3600.0               # s: older uploads are removed when a new one is stored
UPLOADS_CAP = 2 * 1024 * 1024 * 1024       # bytes of uploads kept in all (oldest removed first)
UPLOAD_NAME_RE = re.compile(r"[0-9a-f]{32}\.(zip|tar\.gz|tar)")

MAX_STRENGTH = 1000.0

Status = Literal["queued", "loading", "training", "measuring", "saving", "done", "stopped", "failed"]
ACTIVE: tuple[str, ...] = ("queued", "loading", "training", "measuring", "saving")


class JobError(ConfigError):
    """A job cannot start: bad settings, a limit, a name in use. The message is for the user."""


class _Stopped(Exception):
    """Raised in the job thread when a Stop (or a stop before it began) ends the run there."""


# --- what to train ---------------------------------------------------------------------------------
@dataclass
class JobSpec:
    """Everything the Train page asks for; `config` holds any other model config fields."""

    name: str
    model: str
    dataset: str                         # 'mnist', 'digits', ..., or 'folder:PATH'
    latent_dim: int = 32
    epochs: int = 5
    noise: str | None = None             # 'gaussian:0.5', ...: a denoising autoencoder
    strength: float | None = None        # the regulariser's weight (the model's regularizer_weight); None = default
    stage_epochs: int | None = None      # stacked-ae: epochs of each greedy stage (0 = no pretraining)
    labels: int | None = None            # hyper-semi: label budget; None = all labels
    lr: float = 1e-3
    batch_size: int = 128
    max_images: int | None = None        # use at most this many training images (seeded choice)
    seed: int = 0
    config: dict[str, Any] = field(default_factory=dict)
    folder_size: int = 32                # folder: datasets only
    folder_grayscale: bool = False
    semi_baselines: bool = False         # hyper-semi: also measure a scratch CNN and PCA + logreg
    precision: str = "fp32"              # "bf16": bfloat16 autocast, where the device has it (bf16_problem)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def validate_name(name: str) -> str:
    """The folder name of a user model: letters, digits, '-' and '_' only (no paths, no dots)."""
    name = (name or "").strip()
    if not name:
        raise JobError("give the model a name (letters, digits, - and _)")
    if len(name) > MAX_NAME:
        raise JobError(f"the name is {len(name)} characters long; at most {MAX_NAME}")
    if not NAME_RE.fullmatch(name):
        bad = sorted({c for c in name if not NAME_RE.fullmatch(c)})
        raise JobError(f"the name {name!r} may use letters, digits, - and _ only (not {' '.join(map(repr, bad))})")
    return name


def is_folder(dataset: str) -> bool:
    return dataset.startswith("folder:")


def dataset_options(spec: JobSpec) -> dict[str, Any]:
    """load_dataset options for this spec (folder: size and grayscale; nothing otherwise)."""
    if is_folder(spec.dataset):
        return {"size": spec.folder_size, "grayscale": spec.folder_grayscale}
    return {}


def expected_shape(spec: JobSpec) -> tuple[int, ...]:
    """Input shape the dataset will have, known before loading it (the model is built from it)."""
    if is_folder(spec.dataset):
        return (1 if spec.folder_grayscale else 3, spec.folder_size, spec.folder_size)
    return tuple(dataset_info(spec.dataset)["input_shape"])


def regularizer(model: str, kind: str | None = None) -> tuple[str, float, str] | None:
    """(config field, its default value, what it means) for models with a regulariser weight, as the
    model declares it (`regularizer_weight`); `kind` is the penalty, for a model with several."""
    if model not in list_models():
        return None
    cls = get_model_class(model)
    weight = cls.regularizer_weight
    if weight is None:
        return None
    return weight.field, weight.default(cls.config_class, kind), weight.about


def regularized_models() -> list[str]:
    """The models with a regulariser weight a job's `strength` can set."""
    return [name for name in list_models() if get_model_class(name).regularizer_weight is not None]


def _models_for(role: str) -> str:
    """The models with `role`, for a message: 'a', 'a or b'."""
    return " or ".join(models_with(role))


def model_config(spec: JobSpec, shape: tuple[int, ...]) -> dict[str, Any]:
    """The model's config dict: the spec's extra fields, the input shape, code size and strength."""
    config = dict(spec.config, input_shape=list(shape))
    fields = get_model_class(spec.model).config_class.__dataclass_fields__
    if "latent_dim" in fields:
        config["latent_dim"] = spec.latent_dim
    weight = get_model_class(spec.model).regularizer_weight
    if weight is not None and spec.strength is not None:
        config[weight.field] = float(spec.strength)
    return config


def train_config(spec: JobSpec) -> TrainConfig:
    return TrainConfig(epochs=spec.epochs, batch_size=spec.batch_size, lr=spec.lr, seed=spec.seed,
                       noise=spec.noise, labels=spec.labels, stage_epochs=spec.stage_epochs,
                       labelled_per_batch=SEMI_LABELLED_PER_BATCH if spec.labels else 0)


def app_folder(dataset: str) -> Path:
    """The resolved path of a `folder:PATH` dataset that an app visitor may train on: inside a root the
    operator allows ($AECORE_FOLDER_ROOTS), or one archive in the uploads folder; JobError otherwise.
    Nothing is read at PATH before this passes (resolving follows links, it lists no folder)."""
    raw = dataset[len("folder:"):].strip() if is_folder(dataset) else ""
    if not raw or raw == ".":
        raise JobError("type the path of your image folder (laid out as PATH/<class>/<image>), or upload "
                       "your images as a .zip")
    try:
        real = check_allowed_folder(raw)
    except ConfigError as err:
        raise JobError(str(err)) from None
    uploads = uploads_dir().resolve()
    if inside(real, uploads) and not any(inside(real, root) for root in allowed_folder_roots()):
        if real.parent != uploads or not UPLOAD_NAME_RE.fullmatch(real.name):
            raise JobError("in the uploads folder, a job trains on one uploaded archive; upload yours on the "
                           "Train page")
    return real


def is_upload(dataset: str) -> bool:
    """The dataset is an archive a visitor uploaded (`store_upload`)."""
    if not is_folder(dataset):
        return False
    path = Path(dataset[len("folder:"):].strip())
    return path.parent == uploads_dir().resolve() and bool(UPLOAD_NAME_RE.fullmatch(path.name))


def app_spec(spec: JobSpec) -> JobSpec:
    """The spec a job runs: a `folder:` dataset by its checked, resolved path (see `app_folder`)."""
    if is_folder(spec.dataset):
        return dataclasses.replace(spec, dataset=f"folder:{app_folder(spec.dataset)}")
    return spec


def check_spec(spec: JobSpec) -> torch.nn.Module:
    """Refuse what would fail or swamp the machine, with a message naming the problem; returns the
    (untrained) model, so config errors show before any data is loaded."""
    validate_name(spec.name)
    if spec.model not in list_models():
        raise JobError(f"unknown model {spec.model!r}; choose one of {', '.join(list_models())}")
    if not 1 <= spec.epochs <= MAX_EPOCHS:
        raise JobError(f"epochs must be between 1 and {MAX_EPOCHS} in the app, got {spec.epochs} "
                       "(use the `aecore train` command for longer runs)")
    if not 1 <= spec.latent_dim <= MAX_LATENT:
        raise JobError(f"the code size (latent_dim) must be between 1 and {MAX_LATENT}, got {spec.latent_dim}")
    if not 1 <= spec.batch_size <= MAX_BATCH:
        raise JobError(f"batch size must be between 1 and {MAX_BATCH}, got {spec.batch_size}")
    if not 0 < spec.lr <= 1.0:
        raise JobError(f"learning rate must be in (0, 1], got {spec.lr:g}")
    if spec.precision not in PRECISIONS:
        raise JobError(f"precision must be one of {', '.join(PRECISIONS)}, got {short_repr(spec.precision)}")
    if spec.max_images is not None and not MIN_TRAIN_IMAGES <= spec.max_images <= MAX_TRAIN_IMAGES:
        raise JobError(f"training images must be between {MIN_TRAIN_IMAGES} and {MAX_TRAIN_IMAGES:,}, "
                       f"got {spec.max_images:,}")
    if spec.stage_epochs is not None:
        if not has_role(spec.model, GREEDY_STAGES):
            raise JobError(f"greedy layer-wise stages are for {_models_for(GREEDY_STAGES)} only")
        if not 0 <= spec.stage_epochs <= MAX_EPOCHS:
            raise JobError(f"epochs per greedy stage must be between 0 and {MAX_EPOCHS}, got {spec.stage_epochs}")
    if spec.labels is not None:
        if not has_role(spec.model, SEMI_SUPERVISED):
            raise JobError(f"a label budget is for {_models_for(SEMI_SUPERVISED)} only (the other models train "
                           "without labels)")
        if spec.labels < 1:
            raise JobError(f"the label budget must be at least 1, got {spec.labels}")
    if spec.semi_baselines and not has_role(spec.model, SEMI_SUPERVISED):
        raise JobError(f"the semi-supervised baselines are measured for {_models_for(SEMI_SUPERVISED)} only")
    if spec.strength is not None:
        if get_model_class(spec.model).regularizer_weight is None:
            raise JobError(f"{spec.model} has no regulariser weight; models with one: "
                           f"{', '.join(regularized_models())}")
        if not (math.isfinite(spec.strength) and 0 <= spec.strength <= MAX_STRENGTH):
            raise JobError(f"regulariser strength must be between 0 and {MAX_STRENGTH:g}, got {spec.strength}")
    if is_folder(spec.dataset):
        path = app_folder(spec.dataset)          # before anything looks at the path
        if not path.exists():
            raise JobError(f"the folder {path} does not exist (on the machine running the app)")
        if path.is_dir() and not any(path.iterdir()):
            raise JobError(f"the folder {path} is empty; put your images in {path}/<class>/<image>.png")
        if not 4 <= spec.folder_size <= MAX_FOLDER_SIZE:
            raise JobError(f"folder images are resized to between 4 and {MAX_FOLDER_SIZE} pixels, "
                           f"got {spec.folder_size}")
    shape = expected_shape(spec)
    cls = get_model_class(spec.model)
    if not cls.supports(shape):
        raise JobError(f"{spec.model} cannot take {spec.dataset} images of shape {list(shape)}"
                       + (" (convolutional models need images of at least 8 x 8 pixels)" if len(shape) == 3 else ""))
    try:
        config = make_config(spec.model, model_config(spec, shape))
        if spec.noise:
            from aecore.noise import parse_noise
            parse_noise(spec.noise)
        train_config(spec).validate()
        with torch.device("meta"):          # count the parameters without allocating them
            n_params = sum(p.numel() for p in cls(config=config).parameters())
        if n_params > MAX_PARAMETERS:
            raise JobError(f"this model has {n_params:,} parameters; the app trains at most {MAX_PARAMETERS:,} "
                           "(make the code or the hidden layers smaller)")
        check_fits_memory(spec.model, config, batch_size=spec.batch_size)   # weights, Adam, activations
        return cls(config=config)
    except JobError:
        raise
    except ConfigError as err:
        raise JobError(str(err)) from None


# --- the data a job trains on --------------------------------------------------------------------
def prepare_split(full: ImageData, *, max_images: int | None, seed: int,
                  val_fraction: float = VAL_FRACTION) -> tuple[ImageData, ImageData]:
    """(train, validation) exactly as a job makes them: a seeded choice of at most `max_images`
    (in their original order), then a seeded validation split. The Semi-supervised page replays it
    to find which images were labelled."""
    cap = min(max_images or MAX_TRAIN_IMAGES, MAX_TRAIN_IMAGES)
    if len(full) > cap:
        order = torch.randperm(len(full), generator=torch.Generator().manual_seed(seed))[:cap]
        full = full.subset(torch.sort(order).values)
    return split_off(full, val_fraction, seed=seed)


def fallback_notice(data: ImageData) -> str | None:
    """What to tell the user when `load_dataset(name, "train")` gave the bundled test split (plain
    text: a page shows it through its plain-text filter)."""
    if data.split == "train":
        return None
    return (f"Only the bundled test split of {data.name} is on this machine ({len(data):,} images), so the "
            "model trains on (most of) it; its metrics are measured on the held-out part that it never saw. "
            "For the full training split, put the dataset's files in the data folder (see the README: Data).")


IMAGE_STEPS = (1000, 5000, 10_000, 30_000, 60_000)   # the Train page's choices of training images


def image_choices(available: int | None) -> list[int]:
    """The Train page's choices for "training images (at most)": the usual steps below the number of
    training images that are really there (`available`: the loaded split's size; None when unknown
    before the run, e.g. a folder), then that number itself, so the largest choice is all of them
    (never more than MAX_TRAIN_IMAGES, never below MIN_TRAIN_IMAGES)."""
    top = MAX_TRAIN_IMAGES if available is None else max(MIN_TRAIN_IMAGES, min(int(available), MAX_TRAIN_IMAGES))
    return [n for n in IMAGE_STEPS if n < top] + [top]


LOSS_AXIS = "training loss (the model's own objective, per image)"


def loss_about(model: torch.nn.Module) -> str:
    """What `model`'s training loss is, in words, for the loss chart: its own objective, summed over an
    image's values and averaged over the images of a batch, plus any weighted penalty. So it is not the
    per-pixel MSE the other pages show (a mean over the pixels, measured on the test split). Told from
    what the model declares (roles, config, regulariser), never from its name."""
    name = getattr(model, "registry_name", "")
    config = model.config
    d = int(math.prod(config.input_shape))
    values = f"the {d:,} pixel values of an image"
    if has_role(name, SEMI_SUPERVISED):
        return ("a weighted sum over a batch: the classifier's cross-entropy on the labelled images, plus the "
                f"squared reconstruction error summed over {values} (times a small weight), plus terms on the "
                "unlabelled images (VAT, the entropy of each prediction, minus the entropy of the mean "
                "prediction). It trains a classifier, so it is no reconstruction error")
    if has_role(name, GENERATIVE):
        likelihood = ("binary cross-entropy" if getattr(config, "decoder", "bernoulli") == "bernoulli"
                      else "Gaussian negative log-likelihood")
        return (f"the negative ELBO of an image, in nats: the {likelihood} of its reconstruction summed over "
                f"{values}, plus β × the KL divergence of its code from the prior")
    cls = get_model_class(name) if name in list_models() else None
    output = cls.non_image_output(config.to_dict()) if cls is not None and hasattr(config, "to_dict") else None
    if output:
        return f"the model's loss on its own output ({output}), summed over {values}"
    if getattr(config, "loss", "mse") == "bce":
        about = f"the binary cross-entropy of the reconstruction, summed over {values}"
    else:
        about = f"the squared error of the reconstruction, summed over {values} ({d:,} × the per-pixel MSE)"
    if has_role(name, RANKED_CODE):
        about += (f", averaged over the reconstructions from the top 1, 2, …, {config.latent_dim} units "
                  "(the rank-ordered code's progressive error)")
    weight = cls.regularizer_weight if cls is not None else None
    if weight is not None:
        about += f", plus the penalty weighted by the regulariser strength ({weight.about})"
    if has_role(name, GREEDY_STAGES):
        about += ("; in a greedy stage after the first, a layer's squared error reconstructing the code of the "
                  "layer below it instead")
    return about


# --- the job --------------------------------------------------------------------------------------
@dataclass
class JobSnapshot:
    """A consistent copy of a job's state for drawing (lists are copies)."""

    id: str
    name: str                     # the model's folder name (may gain a suffix when taken)
    requested_name: str
    spec: dict[str, Any]
    status: str
    progress: float               # 0..1 of the whole run
    message: str
    error: str | None
    notices: list[str]
    steps: list[int]              # optimiser step of each loss read-out
    parts: dict[str, list[float]]  # loss part -> values at `steps`
    epochs: list[dict[str, Any]]  # one row per finished epoch: stage, epoch, step, train, val
    stage_starts: list[tuple[int, str]]
    elapsed: float
    saved: str | None             # catalog ref 'user:<name>' once saved
    path: str | None
    metrics: dict[str, Any]
    loss_about: str = ""          # what the training loss is (`loss_about`), for the chart's caption
    control: str = "running"      # pause / step state (`watch.Control.state`): running, pausing, paused, stepping
    at_epoch_end: bool = False    # paused at an epoch's end (else after a batch)
    watch: watching.WatchView | None = None   # the snapshots so far (None: not watched, or none yet)
    watch_error: str | None = None            # why the snapshots stopped (the run went on)
    train_seconds: float | None = None        # time of the training phase (Trainer.fit) less pauses, once over
    pause_left: float = 0.0                   # s: of the run's pause budget (watch.MAX_PAUSE in all) left
    yielded: bool = False                     # stopped while paused and unwatched (UNWATCHED_PAUSE), not by a Stop

    @property
    def paused(self) -> bool:
        return self.status == "training" and self.control == "paused"

    @property
    def active(self) -> bool:
        return self.status in ACTIVE


class _Recorder(Callback):
    """Trainer callback: copies read-outs and finished epochs into the job (under its lock)."""

    def __init__(self, job: "TrainingJob"):
        self.job = job
        self._last: dict | None = None

    def on_stage_begin(self, state: TrainState) -> None:
        with self.job._lock:
            if state.n_stages > 1:
                self.job._stage_starts.append((state.step, state.stage))

    def on_batch_end(self, state: TrainState) -> None:
        job = self.job
        with job._lock:
            if state.parts is not self._last and state.parts:   # a new read-out (every log_every batches)
                self._last = state.parts
                job._steps.append(state.step)
                for name, value in state.parts.items():
                    series = job._parts.setdefault(name, [math.nan] * (len(job._steps) - 1))
                    series.append(value)
                for series in job._parts.values():                 # a part missing this time
                    if len(series) < len(job._steps):
                        series.append(math.nan)
                if len(job._steps) > MAX_POINTS:                    # keep memory bounded: drop every other
                    job._steps = job._steps[::2]
                    job._parts = {k: v[::2] for k, v in job._parts.items()}
            job._progress = state.progress
            stage = f"{state.stage}, " if state.n_stages > 1 else ""
            job._where = (f"{stage}epoch {state.epoch + 1} of {state.epochs}, "
                          f"batch {state.batch} of {state.batches_per_epoch}")
            job._message = f"Training: {job._where}"

    def on_epoch_end(self, state: TrainState) -> None:
        with self.job._lock:
            row = dict(state.history[-1])
            row["step"] = state.step
            self.job._epochs.append(row)


def _load_data(spec: JobSpec, shape: tuple[int, ...], abandoned: threading.Event) -> dict[str, Any]:
    """A job's training, validation and test images (see `TrainingJob._loader`)."""
    options = dataset_options(spec)
    full = load_dataset(spec.dataset, "train", **options)
    if math.prod(full.input_shape) != math.prod(shape):
        raise DataError(f"{spec.dataset} images have shape {list(full.input_shape)}, the model was built "
                        f"for {list(shape)}")
    notice = fallback_notice(full)
    train, val = prepare_split(full, max_images=spec.max_images, seed=spec.seed)
    if len(train) < 2:
        raise DataError(f"{spec.dataset}: only {len(train)} training image(s); that is too few to train on")
    if abandoned.is_set():
        return {}
    # without a training split, the held-out part of the test split is all this model has not seen
    test = val if notice else load_dataset(spec.dataset, "test", **options)
    return {"train": train, "val": val, "test": test, "notice": notice, "split": full.split,
            "classes": full.classes}


class _Worker:
    """One blocking phase (loading, measuring) in a daemon thread. It only fills its own box (value or
    error, then `done`); the job thread reads the box, or leaves it behind (`abandoned` set: the phase
    may look at it to give up early between steps) -- then nothing reads it again."""

    def __init__(self, name: str, work):
        self.done = threading.Event()
        self.abandoned = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(work,), name=name, daemon=True)

    def _run(self, work) -> None:
        try:
            use_machine_threads()
            self.value = work(self.abandoned)
        except BaseException as err:  # noqa: BLE001 - handed to the job thread (if it still waits)
            self.error = err
        finally:
            self.done.set()


_LEFT_BEHIND: list[threading.Thread] = []      # workers abandoned while still running (for the log)


def _keep_a_thread_pool() -> None:
    """Give the job's thread an OpenMP thread pool of its own, kept while it waits on the trainer.

    GNU OpenMP (torch's CPU threads) lets a waiting thread spin at length while it counts no more
    threads in the process than CPUs, and only briefly, then sleep, when it counts more. The CLI
    loads its data in the thread that calls the trainer, so that thread's pool exists and the
    trainer's threads wait politely; a job loads in a worker thread that ends (its pool with it), so
    the trainer's threads alone were counted and spun. On a machine busy with other work (other
    sessions, other programs) a spinning thread burns the time slices its team-mate needs: a job
    trained 10-20 x slower than the same run from the CLI (bench/training_view_overhead.py, 2026-12-03).
    One small parallel operation here keeps this thread's pool, so a job waits as the CLI does."""
    if torch.get_num_threads() > 1:
        torch.ones(1 << 18).add_(1.0)          # above torch's grain size: runs on the pool's threads


def left_behind() -> int:
    """How many abandoned worker threads (a stuck or slow load or measurement) are still running."""
    with _REGISTRY_LOCK:
        _LEFT_BEHIND[:] = [t for t in _LEFT_BEHIND if t.is_alive()]
        return len(_LEFT_BEHIND)


class TrainingJob:
    """One training run in a daemon thread. Construct through `start()` (it checks the limits)."""

    def __init__(self, spec: JobSpec, name: str, model: torch.nn.Module, *,
                 callbacks: Iterable[Callback] = (), device: str | None = None, watch: bool = True):
        self.id = uuid.uuid4().hex[:12]
        self.spec = spec
        self.requested_name = spec.name
        self.name = name
        self.model = model
        self.loss_about = loss_about(model)
        self.device = device
        self.cancel = threading.Event()
        self.control = watching.Control(self.cancel)     # pause / step / resume (aecore.lab.watch)
        self.watching = watch                            # take snapshots (aecore.lab.watch.Snapshots)
        self._watch: watching.Snapshots | None = None
        self._watch_error: str | None = None
        self._where = ""
        self._train_seconds: float | None = None
        self._callbacks = list(callbacks)
        self._lock = threading.Lock()
        self._status: str = "queued"
        self._progress = 0.0
        self._message = "Waiting to start"
        self._error: str | None = None
        self._notices: list[str] = []
        self._steps: list[int] = []
        self._parts: dict[str, list[float]] = {}
        self._epochs: list[dict[str, Any]] = []
        self._stage_starts: list[tuple[int, str]] = []
        self._metrics: dict[str, Any] = {}
        self._path: Path | None = None
        self._started = time.monotonic()
        self._finished: float | None = None
        self._seen = self._started                       # last `snapshot()`: someone watches the run
        self._yielded = False                            # stopped because it was paused and unwatched
        self._guard: threading.Thread | None = None      # the pause guard (started at the first hold)
        self.control.on_hold.append(self._guard_pause)
        self._thread = threading.Thread(target=self._run, name=f"aecore-train-{name}", daemon=True)

    # --- what the page uses -----------------------------------------------------------------
    def stop(self) -> None:
        """Ask the run to stop. Its training slot is free at once (see the module docstring); a run
        stopped after a finished epoch still saves that epoch's weights, and a save under way finishes."""
        with self._lock:
            self.cancel.set()
            if self._status == "queued":          # its thread has not begun: it will do nothing
                self._status, self._message = "stopped", "Stopped before it began: nothing was saved."
                self._finished = time.monotonic()
        self.control.wake()                       # a paused run ends its hold at once

    def pause(self) -> bool:
        """Hold the training at the next batch's end (see `aecore.lab.watch.Control`); False when the run's
        pause budget (watch.MAX_PAUSE in all) is spent: the snapshot's notices then say so."""
        return self.control.pause()

    def resume(self) -> None:
        self.control.resume()

    def step(self, unit: str = "epoch", count: int = 1) -> bool:
        """Go on to the end of the epoch ('epoch') or for `count` batches ('batch'), then hold again; False
        (nothing changes) when the run's pause budget is spent, as `pause()`."""
        return self.control.step(unit, count)

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def active(self) -> bool:
        """Its thread still works (queued ... saving): the page keeps polling, its name stays taken."""
        with self._lock:
            return self._status in ACTIVE

    @property
    def holds_slot(self) -> bool:
        """It counts against MAX_CONCURRENT: queued, loading, training or measuring, and not stopped."""
        with self._lock:
            return self._status in SLOT_STATUSES and not self.cancel.is_set()

    @property
    def status(self) -> str:
        with self._lock:
            return self._status

    @property
    def unwatched_pause(self) -> bool:
        """Paused (held), not stopped, and not seen (`snapshot()`) for UNWATCHED_PAUSE s: it should give its
        slot up (see the module docstring)."""
        if self.control.state != "paused":
            return False
        with self._lock:
            return self._unwatched()

    def _unwatched(self) -> bool:
        """(under self._lock) Training, not stopped, not seen for UNWATCHED_PAUSE s."""
        return (self._status == "training" and not self.cancel.is_set()
                and time.monotonic() - self._seen > UNWATCHED_PAUSE)

    def give_up_slot(self) -> bool:
        """Stop a paused, unwatched run as its Stop button would (saved with the weights of its last finished
        epoch; its slot free at once), and say why in its message. False (nothing done) when it is not one."""
        if not self.unwatched_pause:
            return False
        with self._lock:                # again, under the lock: a Stop or a look may have come meanwhile
            if not self._unwatched():
                return False
            self._yielded = True
            self.cancel.set()
        log.info("training job %s (%s): paused and unwatched for %g s, stopped to free its slot", self.id,
                 self.name, UNWATCHED_PAUSE)
        self.control.wake()
        return True

    def _guard_pause(self, state: TrainState) -> None:
        """on_hold hook (the training thread, as a hold begins): start the pause guard, once per job."""
        with self._lock:
            if self._guard is not None:
                return
            self._guard = threading.Thread(target=self._guard_loop, name=f"aecore-pause-{self.id}", daemon=True)
            guard = self._guard
        guard.start()

    def _guard_loop(self) -> None:
        """Until the run ends or stops: every GUARD_POLL s, stop it if it is paused and unwatched."""
        while not self.cancel.wait(GUARD_POLL) and self.active:
            if self.give_up_slot():
                return

    def _stop_reason(self) -> str:
        """Who stopped the run, for its messages."""
        with self._lock:
            yielded = self._yielded
        return (f"stopped while paused and unwatched for {UNWATCHED_PAUSE:g} s, to free its training slot,"
                if yielded else "stopped by the user")

    def snapshot(self) -> JobSnapshot:
        """A copy of the job's state for drawing. It also stamps the job as seen: a paused run that goes
        unseen for UNWATCHED_PAUSE s is stopped (see the module docstring)."""
        control, at_epoch_end = self.control.state, self.control.at_epoch_end
        pause_left, budget_told = self.control.pause_left, self.control.ended_by_time or self.control.refused
        view = self._watch.view() if self._watch is not None else None
        watch_error = self._watch.error if self._watch is not None else self._watch_error
        with self._lock:
            self._seen = time.monotonic()
            end = self._finished if self._finished is not None else time.monotonic()
            message, notices = self._message, list(self._notices)
            if self._status == "training" and control in ("paused", "pausing") and self._where:
                message = (f"Paused: {self._where}" if control == "paused"
                           else f"Pausing after this batch: {self._where}")
            if budget_told:
                notices.append(f"A run may be paused for {self.control.max_pause / 60:g} minutes in all (a paused run "
                               "keeps one of the machine's training slots). This run has used that up, so it went "
                               "on and cannot be paused or stepped again; Stop still ends it.")
            return JobSnapshot(
                id=self.id, name=self.name, requested_name=self.requested_name, spec=self.spec.to_dict(),
                status=self._status, progress=self._progress, message=message, error=self._error,
                notices=notices, steps=list(self._steps),
                parts={k: list(v) for k, v in self._parts.items()},
                epochs=[dict(r) for r in self._epochs], stage_starts=list(self._stage_starts),
                elapsed=end - self._started,
                saved=f"user:{self.name}" if self._path is not None else None,
                path=str(self._path) if self._path is not None else None, metrics=dict(self._metrics),
                loss_about=self.loss_about, control=control if self._status == "training" else "running",
                at_epoch_end=at_epoch_end, watch=view, watch_error=watch_error, train_seconds=self._train_seconds,
                yielded=self._yielded, pause_left=pause_left)

    # --- the thread ------------------------------------------------------------------------
    def _set(self, **values: Any) -> None:
        with self._lock:
            for key, value in values.items():
                setattr(self, f"_{key}", value)

    def _enter(self, status: str, message: str, *, stoppable: bool = True, **values: Any) -> None:
        """Move to the next phase, unless a Stop came first (then _Stopped) or the run is over."""
        with self._lock:
            if self._status not in ACTIVE or (stoppable and self.cancel.is_set()):
                raise _Stopped(message)
            self._status, self._message = status, message
            for key, value in values.items():
                setattr(self, f"_{key}", value)

    def _end(self, status: str, message: str, *, error: str | None = None) -> None:
        """The final status, unless one is set already (a Stop while queued)."""
        with self._lock:
            if self._status in ACTIVE:
                self._status, self._message, self._error = status, message, error

    def _wait(self, what: str, work, *, timeout: float, grace: float | None) -> tuple[str, Any]:
        """Run `work(abandoned)` in a worker thread and wait for it, looking at the Stop every POLL s.
        ("done", value) -- its exception is raised here; ("stopped", None) on a Stop (when `grace` is
        given: if it has not finished `grace` s after the Stop); ("timeout", None) past `timeout` s."""
        worker = _Worker(f"aecore-{what}-{self.name}", work)
        worker.thread.start()
        deadline = time.monotonic() + timeout
        stop_by: float | None = None
        outcome = "done"
        while not worker.done.wait(POLL):
            now = time.monotonic()
            if self.cancel.is_set():
                if grace is None:
                    outcome = "stopped"
                    break
                stop_by = now + grace if stop_by is None else stop_by
                if now >= stop_by:
                    outcome = "stopped"
                    break
            if now >= deadline:
                outcome = "timeout"
                break
        if outcome != "done":
            worker.abandoned.set()
            log.warning("training job %s (%s): %s left behind (%s)", self.id, self.name, what, outcome)
            with _REGISTRY_LOCK:
                _LEFT_BEHIND[:] = [t for t in _LEFT_BEHIND if t.is_alive()] + [worker.thread]
            return outcome, None
        if worker.error is not None:
            raise worker.error
        return "done", worker.value

    def _run(self) -> None:
        work = None
        try:
            use_machine_threads()      # pages compute on one thread each (serving.py); training keeps the default
            _keep_a_thread_pool()
            work = Path(tempfile.mkdtemp(prefix=f"aecore-job-{self.id}-"))   # per-epoch checkpoints
            with training_allocations():
                self._train_and_save(work)
        except _Stopped:
            self._end("stopped", self._nothing_saved())
        except AecoreError as err:
            self._end("failed", "Failed", error=str(err))
        except Exception as err:  # noqa: BLE001 - a thread must report, never die silently
            log.exception("training job %s (%s) failed", self.id, self.name)
            self._end("failed", "Failed", error=f"{type(err).__name__}: {err}")
        finally:
            if work is not None:
                shutil.rmtree(work, ignore_errors=True)
            if self._watch is not None:
                self._watch.close()          # the snapshots stay; the model and its device copies go
            with self._lock:
                if self._status in ACTIVE:        # cannot happen; never leave a job "running" for ever
                    self._status, self._message = "failed", "Failed"
                    self._error = self._error or "the training thread ended unexpectedly"
                if self._finished is None:
                    self._finished = time.monotonic()
                self.model = None       # the saved folder is the result; free the memory

    def _nothing_saved(self) -> str:
        """The message of a run stopped before its first epoch finished."""
        with self._lock:
            yielded = self._yielded
        if yielded:
            return (f"Stopped while paused and unwatched for {UNWATCHED_PAUSE:g} s, to free its training slot, before "
                    "the first epoch finished: nothing was saved.")
        return "Stopped before the first epoch finished: nothing was saved."

    def _loader(self):
        """The work of the loading phase: the run's data (in a worker thread; it keeps the spec and the
        model's input shape, never the job)."""
        spec, shape = self.spec, tuple(self.model.config.input_shape)
        return functools.partial(_load_data, spec, shape)

    def _measure(self, model: torch.nn.Module, train: ImageData, test: ImageData, *, notice: str | None,
                 baselines: bool):
        """(metrics, codes of the test images) -- in a worker thread; gives up between steps when left behind."""
        from aecore.pipeline import measure

        spec, device = self.spec, self.device

        def contrast() -> dict[str, Any]:
            """The semi-supervised baselines (a CNN on the labelled images only, PCA + logistic regression)."""
            from aecore.measures import semi_baselines

            return semi_baselines(train, test, spec.labels or len(train), model.config.to_dict(), seed=spec.seed,
                                  device=device)

        def work(abandoned: threading.Event):
            metrics, codes = measure(model, test, noise=spec.noise, limit=MAX_EVAL_IMAGES,
                                     extras=[contrast] if baselines else [], abandoned=abandoned)
            if notice:
                metrics["split"] = "held-out part of the bundled test split (the rest was trained on)"
            return metrics, codes
        return work

    def _train_and_save(self, work: Path) -> None:
        from aecore.maps import write_maps
        from aecore.pipeline import recipe_record, save_trained

        spec, model = self.spec, self.model
        self._enter("loading", "Loading the training data…")
        outcome, data = self._wait("load", self._loader(), timeout=LOAD_TIMEOUT, grace=None)
        if outcome == "stopped":
            self._end("stopped", "Stopped while loading the data: the load was abandoned and nothing was saved.")
            return
        if outcome == "timeout":
            raise DataError(f"loading the data took longer than {LOAD_TIMEOUT:g} s, this app's limit for one "
                            "job: the load was abandoned and nothing was saved (use fewer or smaller images, "
                            "or check that the folder holds only image files)")
        train, val, test, notice = data["train"], data["val"], data["test"], data["notice"]
        if notice:
            with self._lock:
                self._notices.append(notice)
        config = train_config(spec)
        callbacks: list[Callback] = [_Recorder(self)]
        if self.watching:              # after the recorder: a snapshot's label agrees with the progress text
            try:
                snapshots = watching.Snapshots(model, watching.Probe.of(test, seed=spec.seed, noise=spec.noise))
            except Exception as err:  # noqa: BLE001 - the pictures are never worth the run
                log.warning("training job %s (%s): no snapshots: %s", self.id, self.name, err)
                self._watch_error = str(err)
            else:
                self.control.on_hold.append(snapshots.capture_if_stale)     # a pause shows the model it holds
                callbacks.append(snapshots)
                with self._lock:
                    self._watch = snapshots
        self._enter("training", "Training…")
        trainer = Trainer(model, train, config=config, val=val, callbacks=[*callbacks, self.control, *self._callbacks],
                          device=self.device, checkpoint_dir=work, cancel=self.cancel, precision=spec.precision)
        began, held = time.perf_counter(), self.control.held_seconds
        result = trainer.fit()
        with self._lock:               # the time it was held (paused) is no training time
            self._train_seconds = max(0.0, time.perf_counter() - began - (self.control.held_seconds - held))
        notes_cut: list[str] = []
        if result.cancelled:
            if not result.history:
                self._end("stopped", self._nothing_saved())
                return
            _restore_last_epoch(model, work / CHECKPOINT_NAME)
            notes_cut.append(f"{self._stop_reason()} after {len(result.history)} finished epoch(s)")

        stopped_before = self.cancel.is_set()
        baselines = spec.semi_baselines and not stopped_before
        self._enter("measuring", "Measuring the model on the test split…" + (
            " Then training the contrast: the same CNN on the labelled images only, and PCA + logistic "
            "regression…" if baselines else ""), stoppable=False, progress=1.0)
        model.eval()
        outcome, measured = self._wait("measure", self._measure(model, train, test, notice=notice,
                                                                baselines=baselines),
                                       timeout=MEASURE_TIMEOUT, grace=STOP_GRACE)
        if outcome == "done":
            metrics, codes = measured
        else:
            metrics, codes = {}, None
            why = (f"it took longer than {MEASURE_TIMEOUT:g} s, this app's limit" if outcome == "timeout"
                   else "the run was stopped")
            with self._lock:
                self._notices.append(f"Saved without test metrics: measuring the model on the test split was "
                                     f"abandoned ({why}).")
            if outcome == "stopped" and not result.cancelled:
                notes_cut.append("stopped by the user while it was measured: no test metrics")
        self._enter("saving", "Saving…", stoppable=False)
        recipe = recipe_record(config, val_fraction=VAL_FRACTION, app_job=self.id, train_split=data["split"],
                               train_images=len(train), max_images=spec.max_images,
                               dataset_options=dataset_options(spec))
        notes = (f"trained in the app: {spec.model} on {spec.dataset}, "
                 f"{len(result.history)} epoch(s) of {len(train):,} images")
        if notes_cut:
            notes += f" ({'; '.join(notes_cut)})"
        path = _final_path(self)
        metrics = save_trained(model, path, result=result, metrics=metrics, dataset=spec.dataset,
                               classes=data["classes"], recipe=recipe, notes=notes, precision=spec.precision)
        if codes is not None:
            write_maps(path, codes, test.labels, methods=("pca",))
        with self._lock:
            self._path, self._metrics = path, metrics
            self._status = "stopped" if notes_cut else "done"
            self._message = f"Saved as {self.name}"
            if result.cancelled:
                self._message += f" ({notes_cut[0]}; the weights of the last finished epoch)"
            elif notes_cut:
                self._message += f" ({notes_cut[0]})"
            elif self.cancel.is_set():
                self._message += " (the Stop came while it was being saved: the finished model is kept)"


def _restore_last_epoch(model: torch.nn.Module, checkpoint: Path) -> None:
    """Load the model weights of the trainer's last per-epoch checkpoint (a stop mid-epoch leaves
    the live weights half-way through an epoch)."""
    from safetensors.torch import load_file

    tensors = load_file(str(checkpoint))
    state = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
    model.load_state_dict(state, strict=True)


# --- the registry --------------------------------------------------------------------------------
_REGISTRY_LOCK = threading.Lock()
_JOBS: dict[str, TrainingJob] = {}


def _taken(name: str, *, ignore: TrainingJob | None = None) -> bool:
    """A user model folder of that name exists, or another running job will save under it."""
    if user_model_path(name).exists():
        return True
    return any(j is not ignore and j.name == name and j.active for j in _JOBS.values())


def free_name(name: str, *, ignore: TrainingJob | None = None) -> str:
    """`name` if free, else the first free `name-2`, `name-3`, ... (call under the registry lock)."""
    if not _taken(name, ignore=ignore):
        return name
    stem = name[: MAX_NAME - 4]
    for i in range(2, 10_000):
        candidate = f"{stem}-{i}"
        if not _taken(candidate, ignore=ignore):
            return candidate
    raise JobError(f"no free name like {name!r}; choose another name")


def _final_path(job: TrainingJob) -> Path:
    """The folder to save into; if a folder of that name appeared meanwhile, the next free name."""
    with _REGISTRY_LOCK:
        name = free_name(job.name, ignore=job)
        with job._lock:
            if name != job.name:
                job._notices.append(f"A model named {job.name} appeared while this one trained; "
                                    f"saved as {name} instead.")
            job.name = name
    return user_model_path(name)


def _warm_imports(spec: JobSpec) -> None:
    """Import what the thread will need, here in the caller's thread: a module imported by two
    threads at once can be seen half-initialised (plotly probes sys.modules for pandas)."""
    import importlib

    names = ["aecore.evaluate", "aecore.store", "aecore.pipeline", "aecore.maps", "aecore.device",
             "safetensors.torch", "pandas"]           # not scikit-learn: a saved model's PCA map is numpy's
    if spec.semi_baselines:
        names += ["aecore.zoo", "sklearn.linear_model"]
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            pass


def bf16_problem(device: str | None = None) -> str | None:
    """Why training runs cannot use bfloat16 arithmetic on this machine (None when they can): the Train
    page offers it only where the GPU or the CPU has it natively (aecore.device.bf16_problem)."""
    return device_bf16_problem(pick_device(device))


def start(spec: JobSpec, *, collision: Literal["suffix", "refuse"] = "suffix",
          callbacks: Iterable[Callback] = (), device: str | None = None, watch: bool = True) -> TrainingJob:
    """Check the spec and the limits, then start a job; JobError (a message for the user) if not.
    A `folder:` dataset must be one an app visitor may read (`app_folder`); the job trains on its
    resolved path. `watch`: take snapshots for the Train page (`aecore.lab.watch`); pause / step /
    resume work either way."""
    model = check_spec(spec)
    if spec.precision == "bf16" and (problem := bf16_problem(device)):
        raise JobError(f"bfloat16 arithmetic: {problem}; train in fp32")
    spec = app_spec(spec)
    _warm_imports(spec)
    with _REGISTRY_LOCK:
        _free_unwatched_pauses()
        running = [j for j in _JOBS.values() if j.holds_slot]
        if len(running) >= MAX_CONCURRENT:
            names = ", ".join(j.name + (" (paused)" if j.control.state == "paused" else "") for j in running)
            raise JobError(f"{len(running)} models are training on this machine already ({names}); at most "
                           f"{MAX_CONCURRENT} at once. Wait for one to finish, or stop yours. (A paused run gives "
                           f"its slot up once nobody has looked at it for {UNWATCHED_PAUSE:g} s, its tab closed: "
                           "it is then stopped and saved as a Stop saves it.)")
        name = spec.name.strip()
        if _taken(name):
            if collision == "refuse":
                raise JobError(f"a model named {name!r} exists already (or is being trained); choose another "
                               "name — models are never overwritten from the app")
            name = free_name(name)
        job = TrainingJob(spec, name, model, callbacks=callbacks, device=device, watch=watch)
        if name != spec.name.strip():
            job._notices.append(f"A model named {spec.name.strip()} exists already, so this one is saved as "
                                f"{name} (nothing is overwritten).")
        _JOBS[job.id] = job
        _prune()
    job._thread.start()
    return job


def _free_unwatched_pauses() -> None:
    """Stop the paused runs nobody has seen for UNWATCHED_PAUSE s (call under the registry lock), so that
    a count of the slots never includes one (their guards would within GUARD_POLL s anyway)."""
    for job in list(_JOBS.values()):
        job.give_up_slot()


def slot_holders() -> list[TrainingJob]:
    """The jobs that count against MAX_CONCURRENT now (see the module docstring)."""
    with _REGISTRY_LOCK:
        _free_unwatched_pauses()
        return [j for j in _JOBS.values() if j.holds_slot]


def get(job_id: str | None) -> TrainingJob | None:
    """The job with this id (None when unknown, e.g. after a server restart)."""
    if not job_id:
        return None
    with _REGISTRY_LOCK:
        return _JOBS.get(job_id)


def active_jobs() -> list[TrainingJob]:
    with _REGISTRY_LOCK:
        return [j for j in _JOBS.values() if j.active]


def _prune() -> None:
    finished = [j for j in _JOBS.values() if not j.active]
    for job in finished[: max(0, len(finished) - MAX_KEPT_JOBS)]:
        del _JOBS[job.id]


# --- archives visitors upload ----------------------------------------------------------------------
_UPLOADS_LOCK = threading.Lock()


def _archive_kind(data: bytes) -> str:
    """'zip', 'tar.gz' or 'tar' from the bytes themselves (the visitor's file name is not trusted)."""
    if data[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if data[:2] == b"\x1f\x8b":
        return "tar.gz"
    if data[257:262] == b"ustar":
        return "tar"
    raise JobError("the upload is not a .zip or .tar.gz archive; pack your images as <class>/<image>.png "
                   "in a .zip")


def _check_archive(data: bytes, kind: str) -> None:
    """Refuse an archive the folder loader could not read, or one that unpacks to too much."""
    import gzip
    import io
    import zipfile
    import zlib

    from aecore.data.images import is_image_name

    limit = f"{MAX_UPLOAD_UNPACKED // 2**20:,} MB unpacked"
    if kind == "zip":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                members = [i for i in archive.infolist() if not i.is_dir()]
        except (zipfile.BadZipFile, OSError, ValueError) as err:
            raise JobError(f"the uploaded .zip cannot be read ({err})") from None
        if len(members) > MAX_UPLOAD_MEMBERS:
            raise JobError(f"the archive holds {len(members):,} files; at most {MAX_UPLOAD_MEMBERS:,}")
        if sum(i.file_size for i in members) > MAX_UPLOAD_UNPACKED:
            raise JobError(f"the archive unpacks to more than {limit}, this app's limit")
        if not any(is_image_name(i.filename) for i in members):
            raise JobError("the archive holds no image files (.png, .jpg, ...); lay them out as <class>/<image>.png")
        return
    head = data
    if kind == "tar.gz":
        size, chunks = 0, []
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as gz:
                while chunk := gz.read(1 << 20):
                    size += len(chunk)
                    if not chunks:
                        chunks.append(chunk)
                    if size > MAX_UPLOAD_UNPACKED:
                        raise JobError(f"the archive unpacks to more than {limit}, this app's limit")
        except (EOFError, OSError, zlib.error) as err:
            raise JobError(f"the uploaded .tar.gz cannot be read ({err})") from None
        head = chunks[0] if chunks else b""
    if head[257:262] != b"ustar":
        raise JobError("the upload is not a tar archive inside; pack your images as <class>/<image>.png in a .zip")


def _uploads_in_use() -> set[str]:
    """Names of the uploads that jobs still working read (never removed)."""
    with _REGISTRY_LOCK:
        datasets = [j.spec.dataset for j in _JOBS.values() if j.active]
    return {Path(d[len("folder:"):]).name for d in datasets if is_folder(d)}


def prune_uploads(incoming: int = 0, *, now: float | None = None) -> None:
    """Keep the uploads folder bounded: remove uploads older than UPLOAD_MAX_AGE, then the oldest
    until `incoming` more bytes fit in UPLOADS_CAP (never one a running job reads; leftovers of an
    interrupted write after an hour). JobError when there is no room even so."""
    folder = uploads_dir()
    now = time.time() if now is None else now
    in_use = _uploads_in_use()
    kept: list[tuple[float, int, Path]] = []
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        entries = []
    for entry in entries:
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISREG(info.st_mode):
            continue
        path = Path(entry.path)
        if UPLOAD_NAME_RE.fullmatch(entry.name):
            if entry.name not in in_use and now - info.st_mtime > UPLOAD_MAX_AGE:
                path.unlink(missing_ok=True)
            else:
                kept.append((info.st_mtime, info.st_size, path))
        elif entry.name.startswith(".") and entry.name.endswith(".tmp") and now - info.st_mtime > 3600:
            path.unlink(missing_ok=True)
    total = sum(size for _, size, _ in kept)
    for _, size, path in sorted(kept):
        if total + incoming <= UPLOADS_CAP:
            break
        if path.name not in in_use:
            path.unlink(missing_ok=True)
            total -= size
    if total + incoming > UPLOADS_CAP:
        raise JobError(f"the server's space for uploads ({UPLOADS_CAP // 2**20:,} MB) is taken by archives that "
                       "runs are training on; try again when one has finished")


def store_upload(data: bytes) -> Path:
    """Keep an uploaded image archive (a .zip or .tar(.gz) laid out <class>/<image>) for training on
    it: checked (at most MAX_UPLOAD_BYTES, unpacking to at most MAX_UPLOAD_UNPACKED), then written
    atomically to `uploads_dir()/<random>.zip` (or .tar.gz, .tar by its contents), a name the
    visitor cannot choose. Train on `folder:<the returned path>`. JobError for the user otherwise."""
    if not data:
        raise JobError("the uploaded file is empty")
    if len(data) > MAX_UPLOAD_BYTES:
        raise JobError(f"the upload is {len(data) / 2**20:,.0f} MB; at most {MAX_UPLOAD_BYTES // 2**20} MB "
                       "(use fewer or smaller images)")
    kind = _archive_kind(data)
    _check_archive(data, kind)
    from aecore.atomic import atomic_write

    folder = uploads_dir()
    with _UPLOADS_LOCK:
        prune_uploads(len(data))
        folder.mkdir(parents=True, exist_ok=True)
        return atomic_write(folder / f"{uuid.uuid4().hex}.{kind}", data)


# --- the live chart --------------------------------------------------------------------------------
def loss_figure(snap: JobSnapshot, *, log_y: bool = False):
    """Plotly figure: every loss part of the training read-outs (each the mean over the batches since
    the one before) against the step, the validation loss at the end of each epoch, and a dotted line
    where each greedy stage begins. The y axis is the model's own objective (`loss_about`)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    total = snap.parts.get("loss")
    same = [n for n, v in snap.parts.items() if n != "loss" and v == total]   # the loss has one part only
    for name, values in snap.parts.items():
        if name in same:
            continue
        label = f"train {name}" + (f" (= {', '.join(same)})" if name == "loss" and same else "")
        fig.add_trace(go.Scatter(x=snap.steps, y=values, mode="lines", name=label,
                                 line={"width": 3 if name == "loss" else 1.5}))
    val = [(r["step"], r["val"]["loss"]) for r in snap.epochs if r.get("val") and "loss" in r["val"]]
    if val:
        fig.add_trace(go.Scatter(x=[s for s, _ in val], y=[v for _, v in val], mode="lines+markers",
                                 name="validation loss", line={"dash": "dash", "width": 2, "color": "black"}))
    for step, stage in snap.stage_starts:
        fig.add_vline(x=step, line_dash="dot", line_color="grey", annotation_text=stage,
                      annotation_position="top left")
    fig.update_layout(xaxis_title="optimiser step", yaxis_title=LOSS_AXIS, height=360,
                      margin={"l": 10, "r": 10, "t": 30, "b": 10}, legend={"orientation": "h", "y": -0.25})
    if log_y:
        fig.update_yaxes(type="log")
    return fig
