"""The sparsity frontier of a dataset: test MSE against L0, the mean number of code units an image uses.

A sparse code trades error for fewer active units; one chart puts every way of making that trade
side by side, each point saying how it was made:
- PCA with k components: L0 = k (every image uses every component), fitted on the training split;
- a ranked code (role RANKED_CODE, the rank-ordered AE): R_k, each image's k most active units; its
  L0 is the mean number of those k that are not 0 (an image with fewer active units uses fewer);
- every shipped model with a sparse code (role SPARSE_CODE) on the dataset: its L0 (units with |h| >
  0, or > 0.01 for sigmoid codes, which are never exactly 0) and its test MSE;
- for each of those whose sparsity is set by a weight (`regularizer_weight`, e.g. an L1 λ or a k),
  a few variants trained for the frontier with the shipped model's own recipe and fewer epochs, the
  shipped setting among them, so that the sweep's points differ in that one setting only (the shipped
  model, trained longer, is its own point). A KL model is not swept: its sparsity is set by its
  target rate p, not by its weight.

Nothing trains when a page opens: `build` (run by `aecore zoo frontier`, which needs the full
training split) writes pretrained/<dataset>/frontier.json and lists it in manifest.json; the app
reads it only through `read_frontier`, which refuses a file the manifest does not list or whose
SHA-256 differs, and marks a shipped model's points stale when its weights have changed since.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

import aecore
from aecore.atomic import atomic_write_json
from aecore.data.base import ImageData, split_off
from aecore.errors import AecoreError, ConfigError, ModelFileError
from aecore.evaluate import per_image_mse
from aecore.lab.sparsity import default_threshold, target_rate
from aecore.lab.units import through_code
from aecore.models import RANKED_CODE, SPARSE_CODE, get_model_class, has_role
from aecore.paths import pretrained_dir, safe_name
from aecore.pca import PCA
from aecore.pipeline import initial_model, round_to_stored
from aecore.store import (CONFIG, WEIGHTS, check_listed, list_pretrained_in, load_pretrained, read_config,
                          read_json_file, read_manifest, write_manifest)
from aecore.train import TrainConfig, Trainer

FRONTIER = "frontier.json"
FORMAT = "aecore-frontier"
PCA_KS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256)
RANKED_KS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 169, 192, 256)
FLOAT_FACTORS = (0.3, 1.0, 3.0, 10.0)   # a weight's variants: the shipped value times these
INT_FACTORS = (0.25, 0.5, 1.0, 2.0)     # an integer knob's (a k): the shipped value times these, rounded
SWEEP_EPOCHS = 5                        # a variant's epochs at most (the shipped recipe's, when fewer)
MAX_BYTES = 1 << 20
MAX_SERIES, MAX_POINTS, MAX_TEXT = 64, 1000, 1000
MEASURE = ("MSE per pixel of the reconstruction of the clean test split (images in [0, 1]); L0 = mean number "
           "of code units per test image with |h| > threshold (0, or 0.01 for sigmoid codes)")
Progress = Callable[[str], None]


# --- measuring ---------------------------------------------------------------------------------------------
@torch.no_grad()
def model_point(model: nn.Module, test: ImageData, *, batch_size: int = 1000) -> dict[str, float]:
    """{l0, mse, threshold} of one model on the test split. ConfigError when its code is no list of
    units its reconstruction goes through (a U-Net's skips carry the image past it)."""
    why = through_code(model, test)
    if why:
        raise ConfigError(why)
    model.eval()
    threshold = default_threshold(model)
    shape = tuple(model.config.input_shape)
    active, errors = [], []
    for start in range(0, len(test), batch_size):
        x = test.as_float(slice(start, start + batch_size)).to(model.device).view(-1, *shape)
        h = model.encode(x)
        active.append((h.abs() > threshold).sum(1).float().cpu())
        errors.append(per_image_mse(model.decode(h).float(), x).cpu())
    return {"l0": float(torch.cat(active).mean()), "mse": float(torch.cat(errors).mean()), "threshold": threshold}


def pca_points(train: ImageData, test: ImageData, ks=PCA_KS) -> list[dict[str, Any]]:
    """PCA fitted once on `train` with the largest k, then each k's test MSE (L0 = k). Only k below the
    input size: with all D components PCA is exact, an error of 1e-14 that would squash a log axis."""
    d = math.prod(test.input_shape)
    ks = sorted({int(k) for k in ks if k < d}) or [d - 1]
    pca = PCA.fit(train.as_float(), ks[-1])
    x = test.as_float()
    return [{"l0": float(k), "mse": float(per_image_mse(pca.reconstruct(x, k), x).mean()), "label": f"k = {k}"}
            for k in ks]


@torch.no_grad()
def ranked_points(model: nn.Module, test: ImageData, ks=RANKED_KS, *, batch_size: int = 250) -> list[dict[str, Any]]:
    """R_k of a ranked code for the k of `ks` up to its size (and all its units): test MSE, and L0 =
    the mean over images of min(k, the image's active units)."""
    n = int(model.config.latent_dim)
    ks = sorted({int(k) for k in ks if k <= n} | {n})
    shape = tuple(model.config.input_shape)
    sse, active = [], []
    for start in range(0, len(test), batch_size):
        x = test.as_float(slice(start, start + batch_size)).to(model.device).view(-1, *shape)
        sse.append(model.progressive_errors(x).cpu())                             # (B, n)
        active.append((model.encode(x) > 0).sum(1).cpu())
    mse = torch.cat(sse).double().mean(0) / math.prod(shape)
    active = torch.cat(active).double()
    return [{"l0": float(active.clamp(max=k).mean()), "mse": float(mse[k - 1]), "label": f"top {k} units"}
            for k in ks]


# --- the shipped models and their variants ----------------------------------------------------------------
@dataclass
class Shipped:
    ref: str
    name: str                     # registry name (read from config.json)
    info: dict[str, Any]          # config.json, checked
    sha: str                      # SHA-256 of its weights, as the manifest lists them


def shipped_models(dataset: str, root: Path) -> list[Shipped]:
    """The pretrained models of `dataset` with a sparse or ranked code, their config.json checked
    against the manifest."""
    manifest = read_manifest(root)
    out = []
    for ref in list_pretrained_in(manifest):
        if ref.split("/", 1)[0] != dataset:
            continue
        check_listed(root / ref, {CONFIG: manifest.get(f"{ref}/{CONFIG}", "")})
        info = read_config(root / ref)
        if has_role(info["model"], SPARSE_CODE) or has_role(info["model"], RANKED_CODE):
            out.append(Shipped(ref, info["model"], info, manifest[f"{ref}/{WEIGHTS}"]))
    return out


def datasets_with_frontier(root: str | Path | None = None) -> list[str]:
    """The datasets of the pretrained folder with at least one sparse or ranked model."""
    root = Path(root) if root else pretrained_dir()
    datasets = sorted({ref.split("/", 1)[0] for ref in list_pretrained_in(read_manifest(root))})
    return [d for d in datasets if shipped_models(d, root)]


def series_name(shipped: Shipped) -> str:
    """One series per model and penalty: 'sparse-ae, penalty l1'."""
    weight = get_model_class(shipped.name).regularizer_weight
    kind = getattr(shipped.info["config_object"], weight.kind_field, None) if weight and weight.kind_field else None
    return f"{shipped.name}, {weight.kind_field} {kind}" if kind is not None else shipped.name


def sweep_values(model: nn.Module) -> tuple[str, Any, list] | None:
    """(config field, shipped value, values to train) for a model whose sparsity a weight sets; None
    for one without such a weight, or with a target rate (KL: p sets its sparsity, not the weight)."""
    weight = type(model).regularizer_weight
    if weight is None or target_rate(model) is not None:
        return None
    config = model.config
    kind = getattr(config, weight.kind_field) if weight.kind_field else None
    value = getattr(config, weight.field)
    if value is None:
        value = weight.default(type(config), kind)
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        values = sorted({max(1, round(value * f)) for f in INT_FACTORS})
    else:
        values = [float(f"{value * f:.3g}") for f in FLOAT_FACTORS]
    return weight.field, value, values


def train_variant(shipped: Shipped, field_name: str, value: Any, train_full: ImageData, *, epochs: int,
                  device: str | None) -> tuple[nn.Module, dict[str, Any]]:
    """The shipped model's recipe with one config field changed and at most `epochs` epochs; weights
    rounded as the shipped ones are. Returns the model and what was done, for the point's record."""
    recipe = dict(shipped.info.get("recipe") or {})
    known = {f for f in TrainConfig.__dataclass_fields__}
    train_options = {k: v for k, v in recipe.items() if k in known}
    shipped_epochs = int(train_options.get("epochs", epochs))
    train_options["epochs"] = min(epochs, shipped_epochs)
    config = TrainConfig.from_dict(train_options, where=f"{shipped.ref}'s recipe")
    model_config = shipped.info["config_object"].replace(**{field_name: value})
    val_fraction = float(recipe.get("val_fraction", 0.0))
    train, val = split_off(train_full, val_fraction, seed=config.seed)
    model = initial_model(shipped.name, model_config, seed=config.seed)
    start = time.perf_counter()
    Trainer(model, train, config=config, val=val if len(val) else None, device=device).fit()
    seconds = time.perf_counter() - start
    half = shipped.info.get("weights_dtype") == "float16"
    round_to_stored(model, half=half)
    how = (f"trained for this frontier: {shipped.ref}'s recipe with {field_name} = {_show(value)}, "
           f"{config.epochs} epochs (the shipped model: {shipped_epochs}), seed {config.seed}"
           + (", float16-rounded weights as shipped" if half else ""))
    return model.eval(), {"how": how, "seconds": round(seconds, 1), "epochs": config.epochs}


def _show(value: Any) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def chosen_sweep(model: nn.Module, ref: str, vary: dict[str, tuple[str, list]]) -> tuple[str, Any, list] | None:
    """The sweep `vary` names for this shipped model ({'<dataset>/<id>' or '<id>': (config field,
    values)}: a setting no trait declares, such as a top-k model's k), else the one its traits imply."""
    chosen = vary.get(ref) or vary.get(ref.split("/", 1)[1])
    if chosen is None:
        return sweep_values(model)
    field_name, values = chosen
    if not hasattr(model.config, field_name):
        raise ConfigError(f"{ref} has no config field {field_name!r} to vary")
    return field_name, getattr(model.config, field_name), list(values)


def build(dataset: str, train: ImageData, test: ImageData, *, root: str | Path | None = None, epochs: int = SWEEP_EPOCHS,
          device: str | None = None, progress: Progress | None = None, sweep: bool = True,
          vary: dict[str, tuple[str, list]] | None = None) -> dict[str, Any]:
    """Every point of `dataset`'s frontier (module docstring), from the models shipped under `root`
    (default: the pretrained folder) and the full splits `train` and `test`; the frontier.json record.
    `vary` adds or replaces a shipped model's sweep (`chosen_sweep`)."""
    root = Path(root) if root else pretrained_dir()
    say = progress or (lambda text: None)
    started = time.perf_counter()
    say(f"{dataset}: PCA")
    series = [{"name": "PCA, k components", "kind": "pca", "points": pca_points(train, test),
               "how": f"PCA fitted on the {len(train):,} training images; L0 = k (every image uses every component)"}]
    by_name: dict[str, dict[str, Any]] = {}
    for shipped in shipped_models(dataset, root):
        say(f"{shipped.ref}")
        model = load_pretrained(shipped.ref, root=root, device=device).model
        record = {"ref": shipped.ref, "weights_sha256": shipped.sha}
        if has_role(shipped.name, RANKED_CODE):
            series.append({"name": f"{shipped.ref}: top-k ranked units R_k", "kind": "ranked", **record,
                           "points": ranked_points(model, test),
                           "how": f"the shipped {shipped.ref}; R_k keeps each image's k most active units; L0 = mean "
                                  "number of them that are not 0"})
            continue
        try:
            point = model_point(model, test)
        except ConfigError:
            continue
        knob, p = chosen_sweep(model, shipped.ref, vary or {}), target_rate(model)
        epochs_shipped = (shipped.info.get("recipe") or {}).get("epochs")
        trained = f", {epochs_shipped} epochs" if isinstance(epochs_shipped, int) else ""
        label = (f"{knob[0]} = {_show(knob[1])} (shipped{trained})" if knob else
                 f"target mean activation p = {p:g} (shipped{trained})" if p is not None else f"shipped{trained}")
        how = f"the shipped model {shipped.ref}" + (
            f"; its sigmoid units are never exactly 0, so L0 counts those above {point['threshold']:g}"
            if point["threshold"] > 0 else "")
        entry = by_name.setdefault(series_name(shipped), {"name": series_name(shipped), "kind": "model", "points": [],
                                                          "how": get_model_class(shipped.name).description})
        entry["points"].append({**point, **record, "label": label, "how": how})
        if not (sweep and knob):
            continue
        for value in knob[2]:
            say(f"{shipped.ref}: {knob[0]} = {_show(value)}")
            try:
                variant, done = train_variant(shipped, knob[0], value, train, epochs=epochs, device=device)
            except ConfigError as err:                    # a value the model's config refuses
                say(f"{shipped.ref}: {knob[0]} = {_show(value)} skipped ({err})")
                continue
            entry["points"].append({**model_point(variant, test), **done, "base_ref": shipped.ref,
                                    "label": f"{knob[0]} = {_show(value)}, {done['epochs']} epochs"})
    for entry in by_name.values():
        entry["points"].sort(key=lambda p: p["l0"])
    series += list(by_name.values())
    return {"format": FORMAT, "dataset": dataset, "aecore_version": aecore.__version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "test_images": len(test), "train_images": len(train),
            "measure": MEASURE, "build_seconds": round(time.perf_counter() - started, 1), "series": series}


def write(record: dict[str, Any], root: str | Path | None = None) -> Path:
    """pretrained/<dataset>/frontier.json (atomic), then the manifest that lists it."""
    root = Path(root) if root else pretrained_dir()
    check(record, where=FRONTIER)
    file = root / safe_name(record["dataset"], what="dataset") / FRONTIER
    file.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(file, record)
    write_manifest(root)
    return file


# --- reading -----------------------------------------------------------------------------------------------
@dataclass
class Point:
    l0: float
    mse: float
    label: str
    how: str
    ref: str | None = None        # the shipped model it is, when it is one
    stale: bool = False           # that model's weights changed since the frontier was built


@dataclass
class Series:
    name: str
    kind: str                     # 'pca', 'ranked' or 'model'
    how: str
    points: list[Point]
    ref: str | None = None        # the shipped model a ranked series comes from

    @property
    def refs(self) -> set[str]:
        return {p.ref for p in self.points if p.ref} | ({self.ref} if self.ref else set())


@dataclass
class Frontier:
    dataset: str
    measure: str
    created: str
    test_images: int
    series: list[Series] = field(default_factory=list)

    @property
    def refs(self) -> set[str]:
        return set().union(*(s.refs for s in self.series)) if self.series else set()


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise ModelFileError(f"{where} must be a string of at most {MAX_TEXT} characters")
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ModelFileError(f"{where} must be a finite number >= 0, got {str(value)[:40]!r}")
    return float(value)


def check(record: Any, *, where: str) -> None:
    """The shape of a frontier record; ModelFileError naming the first thing wrong."""
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ModelFileError(f"{where}: not an aecore frontier (format {FORMAT!r})")
    for key in ("dataset", "measure", "created"):
        _text(record.get(key), f"{where}: {key!r}")
    series = record.get("series")
    if not isinstance(series, list) or len(series) > MAX_SERIES:
        raise ModelFileError(f"{where}: 'series' must be a list of at most {MAX_SERIES}")
    for i, s in enumerate(series):
        at = f"{where}: series {i}"
        if not isinstance(s, dict) or s.get("kind") not in ("pca", "ranked", "model"):
            raise ModelFileError(f"{at} must be an object of kind pca, ranked or model")
        _text(s.get("name"), f"{at} 'name'"), _text(s.get("how"), f"{at} 'how'")
        points = s.get("points")
        if not isinstance(points, list) or not 0 < len(points) <= MAX_POINTS:
            raise ModelFileError(f"{at}: 'points' must be a list of 1 to {MAX_POINTS}")
        for j, p in enumerate(points):
            if not isinstance(p, dict):
                raise ModelFileError(f"{at}, point {j} must be an object")
            _number(p.get("l0"), f"{at}, point {j} 'l0'"), _number(p.get("mse"), f"{at}, point {j} 'mse'")
            _text(p.get("label"), f"{at}, point {j} 'label'")
            for key in ("how", "ref", "weights_sha256"):
                if key in p:
                    _text(p[key], f"{at}, point {j} {key!r}")


def read_frontier(dataset: str, root: str | Path | None = None) -> Frontier | None:
    """The frontier of `dataset` from the pretrained folder, checked against its manifest; None when
    the manifest lists none (ModelFileError when a frontier.json is there but not listed, or differs)."""
    root = Path(root) if root else pretrained_dir()
    try:
        safe_name(dataset, what="dataset")
    except AecoreError:
        return None                                   # a folder: dataset, a link's garbage: no frontier
    manifest = read_manifest(root)
    folder = root / dataset
    listed = manifest.get(f"{dataset}/{FRONTIER}")
    if listed is None:
        if (folder / FRONTIER).exists():
            raise ModelFileError(f"{folder / FRONTIER}: not listed in the manifest, so it cannot be verified; refused")
        return None
    check_listed(folder, {FRONTIER: listed})
    if (folder / FRONTIER).stat().st_size > MAX_BYTES:
        raise ModelFileError(f"{folder / FRONTIER}: too large for a frontier")
    record = read_json_file(folder / FRONTIER)
    check(record, where=str(folder / FRONTIER))
    if record["dataset"] != dataset:
        raise ModelFileError(f"{folder / FRONTIER}: holds the frontier of {record['dataset'][:80]!r}, not {dataset!r}")

    def stale(p: dict) -> bool:
        return bool(p.get("ref")) and manifest.get(f"{p['ref']}/{WEIGHTS}") != p.get("weights_sha256")

    series = []
    for s in record["series"]:
        ref = s.get("ref") if isinstance(s.get("ref"), str) else None
        whole = stale(s) if ref else False
        series.append(Series(name=s["name"], kind=s["kind"], how=s["how"], ref=ref, points=[
            Point(l0=float(p["l0"]), mse=float(p["mse"]), label=p["label"], how=p.get("how", s["how"]),
                  ref=p.get("ref"), stale=whole or stale(p)) for p in s["points"]]))
    return Frontier(dataset=dataset, measure=record["measure"], created=record["created"],
                    test_images=int(_number(record.get("test_images", 0), "test_images")), series=series)


# --- figure ------------------------------------------------------------------------------------------------
COLOURS = ("#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a", "#19d3f3", "#ff6692", "#b6e880")


def frontier_figure(frontier: Frontier, selected: str | None = None, extra: dict[str, float] | None = None,
                    extra_label: str = "selected model"):
    """Test MSE against L0 (both log). PCA dotted; a ranked code's R_k a line; a model series its
    sweep (open circles on a line) and its shipped models (filled). The selected model's point (or
    R_k curve) is drawn large; `extra` ({l0, mse}: the selected model measured now, when the frontier
    does not hold it) is a star. Stale points (weights changed since the build) are crosses."""
    import plotly.graph_objects as go

    fig = go.Figure()
    colours = iter(COLOURS * 4)

    def trace(s: Series, points: list[Point], name: str, colour: str, *, line: bool, filled: bool) -> None:
        chosen = selected is not None and selected in s.refs
        sizes = [16 if chosen and (s.ref == selected or p.ref == selected) else 9 for p in points]
        symbols = ["x" if p.stale else "circle" if filled else "circle-open" for p in points]
        hover = [f"{s.name}<br>{p.label}<br>L0 {p.l0:.1f}, MSE {p.mse:.5f}<br>{p.how}"
                 + ("<br>(its weights changed since the frontier was built)" if p.stale else "") for p in points]
        fig.add_scatter(x=[p.l0 for p in points], y=[p.mse for p in points], name=name, legendgroup=s.name,
                        mode="lines+markers" if line and len(points) > 1 else "markers",
                        line=dict(color=colour, width=4 if chosen and s.kind == "ranked" else 2,
                                  dash="dot" if s.kind == "pca" else "solid"),
                        marker=dict(color=colour, size=sizes, symbol=symbols, line=dict(width=2, color=colour)),
                        hovertext=hover, hoverinfo="text")

    for s in frontier.series:
        colour = "#7f7f7f" if s.kind == "pca" else next(colours)
        if s.kind != "model":
            trace(s, s.points, s.name, colour, line=True, filled=True)
            continue
        sweep = [p for p in s.points if not p.ref]
        shipped = [p for p in s.points if p.ref]
        if sweep:
            trace(s, sweep, f"{s.name}: sweep", colour, line=True, filled=False)
        if shipped:
            trace(s, shipped, f"{s.name}: shipped" if sweep else s.name, colour, line=False, filled=True)
    if extra is not None:
        fig.add_scatter(x=[extra["l0"]], y=[extra["mse"]], name=extra_label, mode="markers",
                        marker=dict(symbol="star", size=18, color="black"),
                        hovertext=[f"{extra_label}<br>L0 {extra['l0']:.1f}, MSE {extra['mse']:.5f}<br>measured now"],
                        hoverinfo="text")
    fig.update_xaxes(type="log", title="L0: active code units per image (mean over the test split)")
    fig.update_yaxes(type="log", title="test MSE per pixel")
    fig.update_layout(title="Sparsity frontier: lower and further left is better", height=480,
                      margin=dict(l=10, r=10, t=40, b=10), legend=dict(orientation="h", y=-0.2))
    return fig
