"""Training from the app: one background thread per job, live loss history, a safe save at the end.

Streamlit reruns a page script on every click, and a browser tab may close at any moment, so a
training run cannot live in the script: a `TrainingJob` owns a thread running `aecore.train.Trainer`
and the page only polls `job.snapshot()` (a copy taken under the job's lock). Jobs live in a
process-wide registry keyed by a random id; a page keeps its own job's id in its session state, so
two browser sessions never see (or stop) each other's run.

The end of a run is the same whether anyone is watching or not: the model is measured on the test
split (`aecore.evaluate.evaluate`), saved with `aecore.store.save_model` (new folder, then an atomic
swap) to `<user models>/<name>`, and given a PCA latent map (`maps.npz`) so every page can show it
at once. A name that is already taken is never overwritten: the job takes `name-2`, `name-3`, ...
(or refuses, if asked to). A stopped run is saved only when at least one epoch finished, with the
weights of the last finished epoch (read back from the trainer's per-epoch checkpoint).

Limits keep one classroom machine usable: epochs, code size, images, parameters, concurrent jobs.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal

import torch

from aecore.data import dataset_info, load_dataset, split_off
from aecore.data.base import ImageData
from aecore.errors import AecoreError, ConfigError, DataError
from aecore.lab.serving import use_machine_threads
from aecore.models import get_model_class, list_models, make_config
from aecore.paths import user_model_path
from aecore.train import CHECKPOINT_NAME, Callback, TrainConfig, Trainer, TrainState

log = logging.getLogger("aecore.app")

MAX_EPOCHS = 200
MAX_LATENT = 1024
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

# model -> (config field that sets the regulariser's strength, what it is)
REGULARIZERS: dict[str, tuple[str, str]] = {
    "sparse-ae": ("weight", "sparsity penalty weight: λ for L1, β for KL (0.1 / 3 by default)"),
    "contractive-ae": ("weight", "λ, the weight of the Jacobian penalty ‖∂h/∂x‖²"),
    "vae": ("beta", "β, the weight of the KL term (β = 1: the ordinary VAE; > 1: β-VAE)"),
    "conv-vae": ("beta", "β, the weight of the KL term (β = 1: the ordinary VAE; > 1: β-VAE)"),
    "hyper-semi": ("recon_weight", "weight of the reconstruction term that regularises the classifier"),
}
MAX_STRENGTH = 1000.0

Status = Literal["queued", "loading", "training", "measuring", "saving", "done", "stopped", "failed"]
ACTIVE: tuple[str, ...] = ("queued", "loading", "training", "measuring", "saving")


class JobError(ConfigError):
    """A job cannot start: bad settings, a limit, a name in use. The message is for the user."""


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
    strength: float | None = None        # the regulariser's weight (REGULARIZERS); None = the default
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


def regularizer(model: str) -> tuple[str, float, str] | None:
    """(config field, its default value, what it means) for models with a regulariser weight."""
    if model not in REGULARIZERS:
        return None
    name, about = REGULARIZERS[model]
    cls = get_model_class(model).config_class
    default = cls.__dataclass_fields__[name].default
    if model == "sparse-ae" and default is None:
        from aecore.models.sparse_ae import DEFAULT_WEIGHTS
        default = DEFAULT_WEIGHTS["l1"]
    return name, float(default), about


def model_config(spec: JobSpec, shape: tuple[int, ...]) -> dict[str, Any]:
    """The model's config dict: the spec's extra fields, the input shape, code size and strength."""
    config = dict(spec.config, input_shape=list(shape))
    fields = get_model_class(spec.model).config_class.__dataclass_fields__
    if "latent_dim" in fields:
        config["latent_dim"] = spec.latent_dim
    reg = REGULARIZERS.get(spec.model)
    if reg and spec.strength is not None:
        config[reg[0]] = float(spec.strength)
    return config


def train_config(spec: JobSpec) -> TrainConfig:
    return TrainConfig(epochs=spec.epochs, batch_size=spec.batch_size, lr=spec.lr, seed=spec.seed,
                       noise=spec.noise, labels=spec.labels, stage_epochs=spec.stage_epochs,
                       labelled_per_batch=SEMI_LABELLED_PER_BATCH if spec.labels else 0)


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
    if spec.max_images is not None and not MIN_TRAIN_IMAGES <= spec.max_images <= MAX_TRAIN_IMAGES:
        raise JobError(f"training images must be between {MIN_TRAIN_IMAGES} and {MAX_TRAIN_IMAGES:,}, "
                       f"got {spec.max_images:,}")
    if spec.stage_epochs is not None:
        if spec.model != "stacked-ae":
            raise JobError("greedy layer-wise stages are for stacked-ae only")
        if not 0 <= spec.stage_epochs <= MAX_EPOCHS:
            raise JobError(f"epochs per greedy stage must be between 0 and {MAX_EPOCHS}, got {spec.stage_epochs}")
    if spec.labels is not None:
        if spec.model != "hyper-semi":
            raise JobError("a label budget is for hyper-semi only (the other models train without labels)")
        if spec.labels < 1:
            raise JobError(f"the label budget must be at least 1, got {spec.labels}")
    if spec.semi_baselines and spec.model != "hyper-semi":
        raise JobError("the semi-supervised baselines are measured for hyper-semi only")
    if spec.strength is not None:
        if spec.model not in REGULARIZERS:
            raise JobError(f"{spec.model} has no regulariser weight; models with one: {', '.join(REGULARIZERS)}")
        if not (math.isfinite(spec.strength) and 0 <= spec.strength <= MAX_STRENGTH):
            raise JobError(f"regulariser strength must be between 0 and {MAX_STRENGTH:g}, got {spec.strength}")
    if is_folder(spec.dataset):
        path = Path(spec.dataset[len("folder:"):].strip()).expanduser()
        if not str(path).strip() or str(path) == ".":
            raise JobError("type the path of your image folder (laid out as PATH/<class>/<image>)")
        if not path.exists():
            raise JobError(f"the folder {path} does not exist (on the machine running the app)")
        if path.is_dir() and not any(path.iterdir()):
            raise JobError(f"the folder {path} is empty; put your images in {path}/<class>/<image>.png")
        if not 4 <= spec.folder_size <= MAX_FOLDER_SIZE:
            raise JobError(f"folder images are resized to between 4 and {MAX_FOLDER_SIZE} pixels, got {spec.folder_size}")
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
    """What to tell the user when `load_dataset(name, "train")` gave the bundled test split."""
    if data.split == "train":
        return None
    return (f"Only the bundled **test** split of {data.name} is on this machine ({len(data):,} images), so the "
            "model trains on (most of) it; its metrics are measured on the held-out part that it never saw. "
            "For the full training split, put the dataset's files in the data folder (see the README: Data).")


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
            job._message = (f"Training: {stage}epoch {state.epoch + 1} of {state.epochs}, "
                            f"batch {state.batch} of {state.batches_per_epoch}")

    def on_epoch_end(self, state: TrainState) -> None:
        with self.job._lock:
            row = dict(state.history[-1])
            row["step"] = state.step
            self.job._epochs.append(row)


class TrainingJob:
    """One training run in a daemon thread. Construct through `start()` (it checks the limits)."""

    def __init__(self, spec: JobSpec, name: str, model: torch.nn.Module, *,
                 callbacks: Iterable[Callback] = (), device: str | None = None):
        self.id = uuid.uuid4().hex[:12]
        self.spec = spec
        self.requested_name = spec.name
        self.name = name
        self.model = model
        self.device = device
        self.cancel = threading.Event()
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
        self._thread = threading.Thread(target=self._run, name=f"aecore-train-{name}", daemon=True)

    # --- what the page uses -----------------------------------------------------------------
    def stop(self) -> None:
        """Ask the run to stop after the current batch (it then saves if an epoch finished)."""
        self.cancel.set()

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def active(self) -> bool:
        with self._lock:
            return self._status in ACTIVE

    @property
    def status(self) -> str:
        with self._lock:
            return self._status

    def snapshot(self) -> JobSnapshot:
        with self._lock:
            end = self._finished if self._finished is not None else time.monotonic()
            return JobSnapshot(
                id=self.id, name=self.name, requested_name=self.requested_name, spec=self.spec.to_dict(),
                status=self._status, progress=self._progress, message=self._message, error=self._error,
                notices=list(self._notices), steps=list(self._steps),
                parts={k: list(v) for k, v in self._parts.items()},
                epochs=[dict(r) for r in self._epochs], stage_starts=list(self._stage_starts),
                elapsed=end - self._started,
                saved=f"user:{self.name}" if self._path is not None else None,
                path=str(self._path) if self._path is not None else None, metrics=dict(self._metrics))

    # --- the thread ------------------------------------------------------------------------
    def _set(self, **values: Any) -> None:
        with self._lock:
            for key, value in values.items():
                setattr(self, f"_{key}", value)

    def _run(self) -> None:
        work = None
        try:
            use_machine_threads()      # pages compute on one thread each (serving.py); training keeps the default
            work = Path(tempfile.mkdtemp(prefix=f"aecore-job-{self.id}-"))   # per-epoch checkpoints
            self._train_and_save(work)
        except AecoreError as err:
            self._set(status="failed", error=str(err), message="Failed")
        except Exception as err:  # noqa: BLE001 - a thread must report, never die silently
            log.exception("training job %s (%s) failed", self.id, self.name)
            self._set(status="failed", error=f"{type(err).__name__}: {err}", message="Failed")
        finally:
            if work is not None:
                shutil.rmtree(work, ignore_errors=True)
            with self._lock:
                self._finished = time.monotonic()
                self.model = None       # the saved folder is the result; free the memory

    def _train_and_save(self, work: Path) -> None:
        from aecore.device import device_label
        from aecore.evaluate import evaluate

        spec, model = self.spec, self.model
        options = dataset_options(spec)
        self._set(status="loading", message="Loading the training data…")
        full = load_dataset(spec.dataset, "train", **options)
        notice = fallback_notice(full)
        if notice:
            with self._lock:
                self._notices.append(notice)
        shape = tuple(model.config.input_shape)
        if math.prod(full.input_shape) != math.prod(shape):
            raise DataError(f"{spec.dataset} images have shape {list(full.input_shape)}, the model was built "
                            f"for {list(shape)}")
        train, val = prepare_split(full, max_images=spec.max_images, seed=spec.seed)
        if len(train) < 2:
            raise DataError(f"{spec.dataset}: only {len(train)} training image(s); that is too few to train on")
        if notice:
            test = val                              # the only images this model has not seen
        else:
            test = load_dataset(spec.dataset, "test", **options)
        config = train_config(spec)
        self._set(status="training", message="Training…")
        trainer = Trainer(model, train, config=config, val=val, callbacks=[_Recorder(self), *self._callbacks],
                          device=self.device, checkpoint_dir=work, cancel=self.cancel)
        result = trainer.fit()
        note = None
        if result.cancelled:
            if not result.history:
                self._set(status="stopped", message="Stopped before the first epoch finished: nothing was saved.")
                return
            _restore_last_epoch(model, work / CHECKPOINT_NAME)
            note = f"stopped by the user after {len(result.history)} finished epoch(s)"

        self._set(status="measuring", progress=1.0, message="Measuring the model on the test split…")
        model.eval()
        metrics = evaluate(model, test, noise=spec.noise, seed=0, limit=MAX_EVAL_IMAGES)
        if notice:
            metrics["split"] = "held-out part of the bundled test split (the rest was trained on)"
        if spec.semi_baselines:
            from aecore.zoo import semi_baselines
            self._set(message="Training the contrast: the same CNN on the labelled images only, and "
                              "PCA + logistic regression…")
            metrics.update(semi_baselines(train, test, spec.labels or len(train), model.config.to_dict(),
                                          seed=spec.seed, device=self.device))
        metrics["training"] = {"history": result.history, "seconds": round(result.seconds, 1),
                               "images_seen": result.images_seen, "device": result.device,
                               "stopped_early": result.cancelled}
        self._set(status="saving", message="Saving…")
        recipe = {**config.to_dict(), "app_job": self.id, "train_split": full.split, "train_images": len(train),
                  "max_images": spec.max_images, "val_fraction": VAL_FRACTION,
                  "dataset_options": dataset_options(spec)}
        notes = (f"trained in the app: {spec.model} on {spec.dataset}, "
                 f"{len(result.history)} epoch(s) of {len(train):,} images")
        if note:
            notes += f" ({note})"
        path = _final_path(self)
        from aecore.store import save_model
        from aecore.zoo import codes_of, write_maps

        save_model(model, path, dataset=spec.dataset, classes=full.classes, recipe=recipe, metrics=metrics,
                   trained_on=device_label(result.device), notes=notes)
        write_maps(path, codes_of(model, test), test.labels, methods=("pca",))
        with self._lock:
            self._path, self._metrics = path, metrics
            self._status = "stopped" if result.cancelled else "done"
            self._message = f"Saved as {self.name}" + (f" ({note}; the weights of the last finished epoch)"
                                                       if note else "")


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

    names = ["aecore.evaluate", "aecore.store", "aecore.zoo", "aecore.device", "safetensors.torch",
             "sklearn.decomposition", "pandas"]
    if spec.semi_baselines:
        names.append("sklearn.linear_model")
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            pass


def start(spec: JobSpec, *, collision: Literal["suffix", "refuse"] = "suffix",
          callbacks: Iterable[Callback] = (), device: str | None = None) -> TrainingJob:
    """Check the spec and the limits, then start a job; JobError (a message for the user) if not."""
    model = check_spec(spec)
    _warm_imports(spec)
    with _REGISTRY_LOCK:
        running = [j for j in _JOBS.values() if j.active]
        if len(running) >= MAX_CONCURRENT:
            names = ", ".join(j.name for j in running)
            raise JobError(f"{len(running)} models are training on this machine already ({names}); at most "
                           f"{MAX_CONCURRENT} at once. Wait for one to finish, or stop yours.")
        name = spec.name.strip()
        if _taken(name):
            if collision == "refuse":
                raise JobError(f"a model named {name!r} exists already (or is being trained); choose another "
                               "name — models are never overwritten from the app")
            name = free_name(name)
        job = TrainingJob(spec, name, model, callbacks=callbacks, device=device)
        if name != spec.name.strip():
            job._notices.append(f"A model named {spec.name.strip()} exists already, so this one is saved as "
                                f"{name} (nothing is overwritten).")
        _JOBS[job.id] = job
        _prune()
    job._thread.start()
    return job


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


# --- the live chart --------------------------------------------------------------------------------
def loss_figure(snap: JobSnapshot, *, log_y: bool = False):
    """Plotly figure: every loss part of the training read-outs against the step, the validation
    loss at the end of each epoch, and a dotted line where each greedy stage begins."""
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
    fig.update_layout(xaxis_title="optimiser step", yaxis_title="loss (mean per read-out)", height=360,
                      margin={"l": 10, "r": 10, "t": 30, "b": 10}, legend={"orientation": "h", "y": -0.25})
    if log_y:
        fig.update_yaxes(type="log")
    return fig
