"""Model store: a model is a folder of `model.safetensors` + `config.json` (+ `metrics.json`).

Nothing is ever unpickled. Loading validates everything before use (JSON, model name, config
fields and ranges, tensor names, shapes, dtypes, finiteness) and names the problem when it refuses.
Saving writes a complete new folder beside the old one and swaps it in, so an interrupted save
never replaces a good model with a broken one. Pretrained models are checked against the SHA-256
sums in `pretrained/manifest.json` before use.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

import aecore
from aecore.atomic import atomic_write, atomic_write_json
from aecore.errors import AecoreError, ConfigError, ModelFileError
from aecore.paths import pretrained_dir, user_models_dir

log = logging.getLogger("aecore")

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
METRICS = "metrics.json"
MANIFEST = "manifest.json"
MAX_CONFIG_BYTES = 1 << 20
PICKLE_SUFFIXES = {".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin", ".joblib", ".npy"}
CONFIG_KEYS = {"format", "aecore_version", "model", "config", "dataset", "input_shape", "classes", "recipe",
               "trained_on", "weights_sha256", "weights_dtype", "created", "description", "notes"}
TEXT_KEYS = ("aecore_version", "dataset", "trained_on", "created", "description", "notes")
# What a model folder may hold besides hidden temp files: save_model replaces the folder as a whole,
# so it refuses a folder holding anything else (train.CHECKPOINT_NAME and maps.MAPS; a test checks).
OWN_FILES = {WEIGHTS, CONFIG, METRICS, "maps.npz", "checkpoint.safetensors"}


@dataclass
class LoadedModel:
    model: torch.nn.Module
    path: Path
    info: dict[str, Any]                                   # config.json contents
    metrics: dict[str, Any] = field(default_factory=dict)  # metrics.json contents (may be empty)

    @property
    def name(self) -> str:
        return self.info["model"]


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --- saving --------------------------------------------------------------------------------
def save_model(model: torch.nn.Module, path: str | os.PathLike, *, dataset: str | None = None,
               classes: list[str] | None = None, recipe: dict[str, Any] | None = None,
               metrics: dict[str, Any] | None = None, trained_on: str | None = None,
               half: bool = False, notes: str | None = None) -> Path:
    """Write the model folder atomically (new folder, then swap); returns its path."""
    from safetensors.torch import save

    path = Path(path)
    check_replaceable(path)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ModelFileError(f"refusing to save: non-finite values in {', '.join(bad[:5])}")
    weights = save(state)
    info: dict[str, Any] = {
        "format": "aecore-model",
        "aecore_version": aecore.__version__,
        "model": model.registry_name,
        "config": model.config.to_dict(),
        "input_shape": list(model.config.input_shape),
        "weights_sha256": hashlib.sha256(weights).hexdigest(),
        "weights_dtype": "float16" if half else "float32",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    for key, value in (("dataset", dataset), ("classes", classes), ("recipe", recipe),
                       ("trained_on", trained_on), ("notes", notes)):
        if value is not None:
            info[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    tidy(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".new", dir=path.parent))
    try:
        atomic_write(tmp / WEIGHTS, weights)
        atomic_write_json(tmp / CONFIG, info)
        atomic_write_json(tmp / METRICS, metrics or {})
        _swap_in(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def check_replaceable(path: str | os.PathLike) -> None:
    """Refuse a save target that is not a model folder: saving swaps the whole folder and deletes
    the old one, so `--out ~/Documents` must never be accepted (it would delete the documents)."""
    path = Path(path)
    if path.name in ("", ".", ".."):
        raise ModelFileError(f"{str(path)!r} cannot be a model folder; name a new folder, e.g. runs/my-ae")
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise ModelFileError(f"{path} exists and is not a folder; a model is saved as a folder, choose another path")
    if path.is_dir():
        foreign = sorted(n for n in os.listdir(path) if n not in OWN_FILES
                         and not (n.startswith(".") and n.endswith(".tmp")))
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise ModelFileError(f"{path} is not an aecore model folder (it holds {shown}); saving would replace "
                                 "the whole folder, so choose a new or empty folder")


def _swap_in(new: Path, path: Path) -> None:
    """Replace folder `path` by `new`; the old one is kept aside until the new one is in place.
    Both aside names carry this process's id, so `tidy` can tell a dead save's leftovers from a
    save in progress."""
    old = None
    if path.exists():
        old = path.with_name(f".{path.name}.old-{os.getpid()}-{time.monotonic_ns()}")
        os.replace(path, old)
    os.replace(new, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


STALE_SECONDS = 3600          # a save's leftover this old is dead whatever its process id says


def _saver_gone(aside: Path, pid: int | None) -> bool:
    """The save that made `aside` ended (killed, crashed): its process is gone, or it is an hour old."""
    try:
        stat = aside.lstat()
    except OSError:
        return False
    if time.time() - max(stat.st_mtime, stat.st_ctime) > STALE_SECONDS:
        return True
    if pid is None or pid == os.getpid():      # no id (older aecore), or a save of ours in another thread
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:                            # exists, owned by another user
        return False
    return False


def _pid(rest: str) -> int | None:
    head, sep, _ = rest.partition("-")
    return int(head) if sep and head.isdigit() else None


def _leftovers(path: Path) -> tuple[list[Path], list[Path]]:
    """(finished new folders, old folders) that dead saves of model folder `path` left beside it,
    newest last."""
    try:
        names = os.listdir(path.parent)
    except OSError:
        return [], []
    new, old = [], []
    for name in sorted(names):
        aside = path.parent / name
        if name.startswith(f".{path.name}.old-"):                  # .NAME.old-PID-NS
            rest = name[len(f".{path.name}.old-"):]
            if "." not in rest and _saver_gone(aside, _pid(rest)):
                old.append(aside)
        elif name.startswith(f".{path.name}.") and name.endswith(".new"):   # .NAME.PID-RANDOM.new
            rest = name[len(f".{path.name}."):-len(".new")]
            if rest and "." not in rest and _saver_gone(aside, _pid(rest)):
                new.append(aside)
    by_age = lambda p: p.lstat().st_ctime          # noqa: E731
    return sorted(new, key=by_age), sorted(old, key=by_age)


def tidy(path: str | os.PathLike) -> None:
    """Finish what a killed save of model folder `path` left: when `path` is missing, put back the
    newest complete new folder (the model being saved) or else the previous folder; then remove the
    leftovers (2-19 MB each). Called wherever a model folder is opened, listed or saved."""
    path = Path(path)
    new, old = _leftovers(path)
    if not new and not old:
        return
    if not path.exists():
        complete = [n for n in new if all((n / f).is_file() for f in (WEIGHTS, CONFIG, METRICS))]
        for candidate in (complete[-1:] or old[-1:]):
            try:
                os.replace(candidate, path)
            except OSError:
                pass
    for leftover in new + old:
        if leftover.exists():
            shutil.rmtree(leftover, ignore_errors=True)


def write_metrics(path: str | os.PathLike, metrics: dict[str, Any]) -> None:
    atomic_write_json(Path(path) / METRICS, metrics)


# --- loading ---------------------------------------------------------------------------------
def _refuse_pickle(path: Path) -> None:
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise ModelFileError(f"{path.name}: pickle/torch.save files are never loaded (they can run code); "
                             f"aecore models are a folder with {WEIGHTS} + {CONFIG}")
    if path.is_file():
        with open(path, "rb") as f:
            head = f.read(4)
        if head[:1] == b"\x80" or head[:2] == b"PK":
            raise ModelFileError(f"{path.name} looks like a pickle/torch.save file and is never loaded; "
                                 f"aecore models are a folder with {WEIGHTS} + {CONFIG}")
        raise ModelFileError(f"{path}: expected a model folder holding {WEIGHTS} and {CONFIG}")


def check_listed(folder: Path, expected_sha256: dict[str, str]) -> None:
    """Each named file of `folder` has the SHA-256 the manifest lists; ModelFileError otherwise."""
    for name, expected in expected_sha256.items():
        file = folder / name
        if not file.is_file():
            raise ModelFileError(f"{file}: listed in the manifest but missing")
        if sha256_file(file) != expected:
            raise ModelFileError(f"{file}: SHA-256 does not match the manifest (file changed or tampered); refused")


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a model folder's config.json (model name known, config fields valid)."""
    from aecore.models import get_config_class

    path = Path(path)
    file = path / CONFIG
    if not file.is_file():
        raise ModelFileError(f"{path}: no {CONFIG} (is this an aecore model folder?)")
    if file.stat().st_size > MAX_CONFIG_BYTES:
        raise ModelFileError(f"{file}: too large for a config ({file.stat().st_size} bytes)")
    info = read_json_file(file)
    if not isinstance(info, dict):
        raise ModelFileError(f"{file}: expected a JSON object")
    unknown = sorted(set(info) - CONFIG_KEYS)
    if unknown:
        raise ModelFileError(f"{file}: unknown field(s) {', '.join(unknown)}")
    for key in ("model", "config"):
        if key not in info:
            raise ModelFileError(f"{file}: missing field {key!r}")
    if not isinstance(info["model"], str):
        raise ModelFileError(f"{file}: field 'model' must be a string")
    if not isinstance(info["config"], dict):
        raise ModelFileError(f"{file}: field 'config' must be a JSON object, got {_short(info['config'])}")
    try:
        info["config_object"] = get_config_class(info["model"]).from_saved(info["config"],
                                                                           where=f"{info['model']} config")
    except ConfigError as err:
        raise ModelFileError(f"{file}: {err}") from None
    _check_fields(file, info)
    return info


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def read_json_file(file: Path) -> Any:
    """Parsed JSON; ModelFileError (naming the file) for bad bytes, bad syntax or absurd nesting."""
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelFileError(f"{file}: not valid JSON ({err})") from None
    except RecursionError:
        raise ModelFileError(f"{file}: not a plausible aecore file (JSON nested too deeply)") from None
    except ValueError as err:        # an integer of more than 4,300 digits (int_max_str_digits)
        raise ModelFileError(f"{file}: not a plausible aecore file ({str(err).split(';')[0]})") from None


def _check_fields(file: Path, info: dict[str, Any]) -> None:
    """The other fields of config.json: eval, the app and the catalog use them without further checks."""
    def refuse(key: str, want: str) -> None:
        raise ModelFileError(f"{file}: field {key!r} must be {want}, got {_short(info[key])}")

    if "format" in info and info["format"] != "aecore-model":
        refuse("format", "'aecore-model'")
    for key in TEXT_KEYS:
        if key in info and not isinstance(info[key], str):
            refuse(key, "a string")
    if "classes" in info and not (isinstance(info["classes"], list) and all(isinstance(c, str) for c in info["classes"])):
        refuse("classes", "a list of strings")
    shape = list(info["config_object"].input_shape)
    if "input_shape" in info and info["input_shape"] != shape:
        refuse("input_shape", f"the config's input_shape {shape}")
    digest = info.get("weights_sha256")
    if digest is not None and not (isinstance(digest, str) and len(digest) == 64
                                   and all(c in "0123456789abcdef" for c in digest)):
        refuse("weights_sha256", "a SHA-256 hex digest")
    if info.get("weights_dtype", "float32") not in ("float32", "float16"):
        refuse("weights_dtype", "'float32' or 'float16'")
    recipe = info.get("recipe")
    if recipe is not None:
        if not isinstance(recipe, dict):
            refuse("recipe", "a JSON object")
        _check_recipe(file, recipe)


def _check_recipe(file: Path, recipe: dict[str, Any]) -> None:
    """The training options a recipe records (lr, epochs, noise, ...) must be ones training accepts:
    eval and the app reuse the recorded noise. Other keys (zoo_id, app_job, ...) are notes."""
    import dataclasses

    from aecore.train import TrainConfig

    known = {f.name for f in dataclasses.fields(TrainConfig)}
    try:
        TrainConfig.from_dict({k: v for k, v in recipe.items() if k in known}, where="recipe")
    except ConfigError as err:
        message = str(err)
        raise ModelFileError(f"{file}: {message if message.startswith('recipe') else 'recipe: ' + message}") from None


def load_model(path: str | os.PathLike, *, device: str | torch.device | None = None,
               expected_sha256: dict[str, str] | None = None) -> LoadedModel:
    """Load a model folder; every check failure is a ModelFileError naming the file and problem."""
    from aecore.models import get_model_class
    from aecore.models.registry import check_fits_memory

    path = Path(path)
    tidy(path)
    if not path.exists():
        raise ModelFileError(f"model not found: {path}")
    if not path.is_dir():
        _refuse_pickle(path)
    weights_file = path / WEIGHTS
    if not weights_file.is_file():
        pickles = [p.name for p in path.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES]
        hint = f" ({', '.join(pickles)} found: pickle files are never loaded)" if pickles else ""
        raise ModelFileError(f"{path}: no {WEIGHTS}{hint}")
    if expected_sha256:
        check_listed(path, expected_sha256)
    info = read_config(path)
    config = info.pop("config_object")
    if info.get("weights_sha256") and sha256_file(weights_file) != info["weights_sha256"]:
        raise ModelFileError(f"{weights_file}: does not match the weights_sha256 in {CONFIG} (mixed or damaged save)")
    try:                                   # a small config.json may describe a model of hundreds of GB
        check_fits_memory(info["model"], config, batch_size=None)
    except ConfigError as err:
        raise ModelFileError(f"{path / CONFIG}: {err}") from None
    model = get_model_class(info["model"])(config=config)
    state = _read_weights(weights_file, model)
    model.load_state_dict(state, strict=True)
    from aecore.device import pick_device

    model.to(pick_device(device) if not isinstance(device, torch.device) else device).eval()
    metrics: dict[str, Any] = {}
    metrics_file = path / METRICS
    if metrics_file.is_file():
        metrics = read_json_file(metrics_file)
        if not isinstance(metrics, dict):
            raise ModelFileError(f"{metrics_file}: expected a JSON object")
    return LoadedModel(model=model, path=path, info=info, metrics=metrics)


def _read_weights(file: Path, model: torch.nn.Module) -> dict[str, Tensor]:
    from safetensors import SafetensorError, safe_open

    expected = model.state_dict()
    try:
        with safe_open(str(file), framework="pt") as f:
            keys = set(f.keys())
            missing = sorted(set(expected) - keys)
            extra = sorted(keys - set(expected))
            if missing or extra:
                parts = []
                if missing:
                    parts.append(f"missing {', '.join(missing[:5])}")
                if extra:
                    parts.append(f"unexpected {', '.join(extra[:5])}")
                raise ModelFileError(f"{file}: tensors do not fit the config ({'; '.join(parts)})")
            state = {}
            for key, ref in expected.items():
                tensor = f.get_tensor(key)
                if tuple(tensor.shape) != tuple(ref.shape):
                    raise ModelFileError(f"{file}: tensor {key!r} has shape {list(tensor.shape)}, "
                                         f"the config needs {list(ref.shape)}")
                if ref.is_floating_point():
                    if not tensor.is_floating_point():
                        raise ModelFileError(f"{file}: tensor {key!r} has dtype {tensor.dtype}, expected floating point")
                    if not torch.isfinite(tensor).all():
                        raise ModelFileError(f"{file}: tensor {key!r} contains NaN or Inf")
                    tensor = tensor.to(ref.dtype)
                    if not torch.isfinite(tensor).all():
                        raise ModelFileError(f"{file}: tensor {key!r} has values beyond the {ref.dtype} range")
                elif tensor.dtype != ref.dtype:
                    raise ModelFileError(f"{file}: tensor {key!r} has dtype {tensor.dtype}, expected {ref.dtype}")
                state[key] = tensor
    except SafetensorError as err:
        raise ModelFileError(f"{file}: not a readable safetensors file ({err})") from None
    except (OSError, ValueError, RuntimeError) as err:
        if isinstance(err, AecoreError):
            raise
        raise ModelFileError(f"{file}: cannot be read ({err})") from None
    return state


# --- pretrained index ------------------------------------------------------------------------
def read_manifest(root: str | os.PathLike | None = None) -> dict[str, str]:
    """{relative file path: sha256} from pretrained/manifest.json ({} when there is none)."""
    root = Path(root) if root else pretrained_dir()
    file = root / MANIFEST
    if not file.is_file():
        return {}
    data = read_json_file(file)
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise ModelFileError(f"{file}: unreadable manifest ('files' must map paths to SHA-256 strings)")
    for key in files:
        parts = key.split("/")
        if key.startswith("/") or "\\" in key or "\0" in key or any(p in ("", ".", "..") for p in parts):
            raise ModelFileError(f"{file}: entry {key!r} is not a plain relative path inside the pretrained folder")
    return files


def write_manifest(root: str | os.PathLike | None = None) -> dict[str, str]:
    """Hash every file of every model folder under `root` into manifest.json."""
    root = Path(root) if root else pretrained_dir()
    files = {}
    for file in sorted(root.rglob("*")):
        if file.is_file() and file.name != MANIFEST and not any(part.startswith(".") for part in file.relative_to(root).parts):
            files[file.relative_to(root).as_posix()] = sha256_file(file)
    atomic_write_json(root / MANIFEST, {"format": "aecore-manifest", "files": files})
    return files


def list_pretrained(root: str | os.PathLike | None = None) -> list[str]:
    """Pretrained ids ('<dataset>/<model-id>') listed in the manifest."""
    return list_pretrained_in(read_manifest(root))


def list_pretrained_in(manifest: dict[str, str]) -> list[str]:
    """The pretrained ids of a manifest already read."""
    return sorted({k.rsplit("/", 1)[0] for k in manifest if k.endswith("/" + WEIGHTS)})


def load_pretrained(model_id: str, *, root: str | os.PathLike | None = None,
                    device: str | torch.device | None = None) -> LoadedModel:
    """A model of the pretrained folder, every file it reads checked against the manifest first."""
    root = Path(root) if root else pretrained_dir()
    manifest = read_manifest(root)
    prefix = model_id.strip("/") + "/"
    expected = {k[len(prefix):]: v for k, v in manifest.items() if k.startswith(prefix) and "/" not in k[len(prefix):]}
    if WEIGHTS not in expected:
        known = ", ".join(list_pretrained(root)) or "none"
        raise ModelFileError(f"unknown pretrained model {model_id!r}; known: {known}")
    folder = root / model_id.strip("/")
    for name in (CONFIG, METRICS):           # the weights are listed (checked above)
        if name not in expected and (name == CONFIG or (folder / name).exists()):
            raise ModelFileError(f"{folder / name}: not listed in {root / MANIFEST}, so it cannot be verified; refused")
    return load_model(folder, device=device, expected_sha256=expected)


def list_user_models(root: str | os.PathLike | None = None) -> list[Path]:
    root = Path(root) if root else user_models_dir()
    if not root.is_dir():
        return []
    names = os.listdir(root)
    for name in {n[1:].split(".old-")[0] if ".old-" in n else n[1:].rsplit(".", 2)[0]
                 for n in names if n.startswith(".") and (".old-" in n or n.endswith(".new"))}:
        if name:
            tidy(root / name)
    return sorted(p for p in root.iterdir() if (p / CONFIG).is_file() and not p.name.startswith("."))


def resolve(ref: str | os.PathLike, *, device: str | torch.device | None = None) -> LoadedModel:
    """A pretrained id such as 'mnist/ae-d32', or a model folder path.

    A pretrained id wins over a folder of the same relative name in the working directory: that folder
    is not manifest-checked, so it must never stand in for the verified model. Write it as a path
    ('./mnist/ae-d32') to mean the folder."""
    text = os.fspath(ref)
    explicit_path = not isinstance(ref, str) or text.startswith(("./", "../", "/", "~")) or os.path.isabs(text)
    try:
        manifest_ids = list_pretrained()
    except ModelFileError:                # a damaged manifest must not stop `aecore eval runs/x`
        if not _exists(Path(text).expanduser()):
            raise
        manifest_ids = []
    if not explicit_path and text in manifest_ids:
        if _exists(Path(text)):
            log.info("%r is the pretrained model; a folder of that name is here too: write ./%s to use the folder",
                     text, text)
        return load_pretrained(text, device=device)
    path = Path(text).expanduser()
    try:
        tidy(path)                        # a save killed between its renames: the folder comes back
    except (OSError, ValueError):
        pass
    if _exists(path):
        return load_model(path, device=device)
    raise ModelFileError(f"no model folder or pretrained id {text!r}"
                         + (f"; pretrained ids: {', '.join(manifest_ids)}" if manifest_ids else ""))


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):         # a name too long for the file system, a NUL byte
        return False
