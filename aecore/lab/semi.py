"""Semi-supervised learning with few labels: test accuracy against the label budget, and where the
labelled examples sit on the latent map.

Three methods, each measured on the test split with the same labelled images: the semi-supervised model (its
metrics.json `accuracy`), the same CNN trained from scratch on the labelled images only
(`scratch_cnn_accuracy`) and PCA + logistic regression (`pca_logreg_accuracy`), both from
`aecore.measures.semi_baselines`. Only measured points are drawn: a model whose metrics lack a method
simply has no point for it. The pretrained points and each run trained in the app are separate series
(never joined by one line), and a run trained far shorter than the pretrained recipe is named as such
(`shortfall`): its points say how far a short run gets, not how the methods compare.

The map is of the test split (PCA of the model's codes). The labelled examples are training images,
so they are projected with the same PCA; which ones were labelled is replayed from the recipe
(`mask_labels` with the recipe's seed on the same training images the run used).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from torch import Tensor

from aecore.data.base import ImageData, split_off
from aecore.errors import AecoreError
from aecore.lab.catalog import USER_PREFIX, ref_path
from aecore.models import SEMI_SUPERVISED, has_role, models_with
from aecore.pca import PCA
from aecore.store import METRICS, read_config
from aecore.train import mask_labels

SEMI_MODEL = models_with(SEMI_SUPERVISED)[0]   # the semi-supervised model: the fresh run's, FRESH_CONFIG's
METHODS = {
    "accuracy": f"{SEMI_MODEL} (CNN + hypernetwork AE, unlabelled images too)",
    "scratch_cnn_accuracy": "the same CNN from scratch, labelled images only",
    "pca_logreg_accuracy": "PCA (50) + logistic regression",
}
SHORT_NAMES = {"accuracy": SEMI_MODEL, "scratch_cnn_accuracy": "CNN from scratch",
               "pca_logreg_accuracy": "PCA + logistic regression"}
COLOURS = {"accuracy": "#1f77b4", "scratch_cnn_accuracy": "#ff7f0e", "pca_logreg_accuracy": "#2ca02c"}
SYMBOLS = {"accuracy": "circle", "scratch_cnn_accuracy": "square", "pca_logreg_accuracy": "diamond"}
RUN_DASHES = ("dash", "dot", "dashdot", "longdash")
PRETRAINED = "pretrained"
APP_RUN = "your run"           # trained in the app (a user model folder)
# a run is too short to compare with the pretrained numbers when it finished fewer epochs than the shortest
# pretrained recipe, or saw less than this share of its training images
SHORT_IMAGES_SHARE = 0.8
MAX_HIGHLIGHT = 2000      # with every label kept, show a sample of the labelled images
# the page's "fresh run": a small hyper-semi (a few minutes on a CPU), few epochs, capped images
FRESH_CONFIG = {"channels": [16, 32, 64], "head_hidden": 64, "embedding_dim": 32}
FRESH_LATENT = 32
FRESH_MAX_EPOCHS = 3
FRESH_IMAGES = (2000, 5000, 10_000)


def model_folder(ref: str) -> Path:
    """Folder of a catalog ref: 'user:<name>' or a pretrained id '<dataset>/<id>' (checked by ref_path)."""
    return ref_path(ref)


@dataclass
class SemiModel:
    ref: str
    label: str
    labels: int | None            # the label budget (None: every training label)
    budget: int | None            # labelled images, as a number for the x axis (None: unknown)
    metrics: dict[str, Any]
    recipe: dict[str, Any]

    @property
    def source(self) -> str:
        """PRETRAINED (the shipped models) or APP_RUN (trained in the app: a user model folder)."""
        return APP_RUN if self.ref.startswith(USER_PREFIX) else PRETRAINED


def read_semi_model(ref: str, label: str) -> SemiModel | None:
    """Config recipe + metrics of one semi-supervised model folder, without loading its weights."""
    folder = model_folder(ref)
    try:
        info = read_config(folder)
    except AecoreError:
        return None
    if not has_role(info.get("model"), SEMI_SUPERVISED):
        return None
    metrics: dict[str, Any] = {}
    file = folder / METRICS
    if file.is_file():
        try:
            loaded = json.loads(file.read_text(encoding="utf-8"))
            metrics = loaded if isinstance(loaded, dict) else {}
        except (UnicodeDecodeError, json.JSONDecodeError):
            metrics = {}
    recipe = info.get("recipe") if isinstance(info.get("recipe"), dict) else {}
    labels = recipe.get("labels")
    labels = labels if isinstance(labels, int) and not isinstance(labels, bool) else None
    budget = labels if labels is not None else recipe.get("train_images")
    budget = budget if isinstance(budget, int) and budget > 0 else None
    return SemiModel(ref=ref, label=label, labels=labels, budget=budget, metrics=metrics, recipe=recipe)


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


@dataclass(frozen=True)
class Scale:
    """How long a model was trained, from its recipe and metrics.json's "training" record."""
    epochs: int | None            # finished training epochs
    images_seen: int | None       # training images processed, all epochs together
    train_images: int | None      # training images per epoch (app runs record it)
    parameters: int | None


def training_scale(model: SemiModel) -> Scale:
    training = model.metrics.get("training") if isinstance(model.metrics.get("training"), dict) else {}
    history = training.get("history") if isinstance(training.get("history"), list) else None
    epochs = (sum(1 for h in history if isinstance(h, dict) and h.get("stage", "train") == "train")
              if history else _count(model.recipe.get("epochs")))
    return Scale(epochs=epochs or None, images_seen=_count(training.get("images_seen")) or None,
                 train_images=_count(model.recipe.get("train_images")) or None,
                 parameters=_count(model.metrics.get("parameters")) or None)


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def describe_scale(scale: Scale) -> str:
    """'1 epoch of 2,000 images (2,250 images seen, 41,194 parameters)'; the parts that are known."""
    head = _plural(scale.epochs, "epoch") if scale.epochs else "an unknown number of epochs"
    if scale.train_images:
        head += f" of {_plural(scale.train_images, 'image')}"
    extra = [f"{scale.images_seen:,} images seen"] if scale.images_seen else []
    if scale.parameters:
        extra.append(f"{scale.parameters:,} parameters")
    return head + (f" ({', '.join(extra)})" if extra else "")


def reference_scale(models: Iterable[SemiModel]) -> Scale | None:
    """The shortest pretrained recipe among `models` (their smallest epochs and images seen); None
    without a pretrained model whose training is recorded."""
    scales = [training_scale(m) for m in models if m.source == PRETRAINED]
    epochs = [s.epochs for s in scales if s.epochs]
    seen = [s.images_seen for s in scales if s.images_seen]
    params = [s.parameters for s in scales if s.parameters]
    if not epochs and not seen:
        return None
    return Scale(epochs=min(epochs, default=None), images_seen=min(seen, default=None), train_images=None,
                 parameters=min(params, default=None))


def shortfall(run: SemiModel, models: Iterable[SemiModel]) -> str | None:
    """Why `run` (trained in the app) is too short to compare with the pretrained models among
    `models`, as one clause ('1 epoch of 2,000 images (...), against 4 epochs (...) for the pretrained
    ones'); None when it is not (as long as the shortest pretrained recipe, or no pretrained model or
    nothing recorded to compare), and for a pretrained model."""
    if run.source == PRETRAINED:
        return None
    ref = reference_scale(models)
    if ref is None:
        return None
    own = training_scale(run)
    fewer_epochs = bool(own.epochs and ref.epochs and own.epochs < ref.epochs)
    fewer_images = bool(own.images_seen and ref.images_seen and own.images_seen < SHORT_IMAGES_SHARE * ref.images_seen)
    if not (fewer_epochs or fewer_images):
        return None
    return f"{describe_scale(own)}, against {describe_scale(ref)} for the pretrained ones"


def accuracy_rows(models: Iterable[SemiModel]) -> list[dict[str, Any]]:
    """One row per measured (model, method): model, labels (x), method, accuracy, source (PRETRAINED
    or APP_RUN) and series (PRETRAINED, or the run's label: each app run is a series of its own).
    Missing or non-numeric figures and models with an unknown budget give no row."""
    rows = []
    for m in models:
        if m.budget is None:
            continue
        for key, method in METHODS.items():
            value = m.metrics.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                rows.append({"model": m.label, "ref": m.ref, "labels": m.budget,
                             "budget": "all" if m.labels is None else str(m.labels),
                             "method": method, "key": key, "accuracy": float(value), "source": m.source,
                             "series": PRETRAINED if m.source == PRETRAINED else m.label})
    order = list(METHODS.values())
    return sorted(rows, key=lambda r: (r["source"] != PRETRAINED, r["series"], order.index(r["method"]),
                                       r["labels"]))


def series_name(key: str, series: str) -> str:
    """A trace's legend name: 'hyper-semi · pretrained', 'CNN from scratch · <run label>'."""
    return f"{SHORT_NAMES[key]} · {series}"


def accuracy_figure(rows: list[dict[str, Any]], short: Iterable[str] = ()):
    """Plotly: test accuracy against the number of labelled images (log x), one line per (method,
    series): the pretrained points solid with filled markers, each app run dashed with open markers
    (colour = method). Points of different series are never joined. `short`: the series (run labels)
    too short to compare, said in their legend names."""
    import plotly.graph_objects as go

    short = set(short)
    fig = go.Figure()
    runs = list(dict.fromkeys(r["series"] for r in rows if r["source"] != PRETRAINED))
    for series in [PRETRAINED, *runs]:
        pretrained = series == PRETRAINED
        dash = "solid" if pretrained else RUN_DASHES[runs.index(series) % len(RUN_DASHES)]
        for key, method in METHODS.items():
            points = sorted((r for r in rows if r["series"] == series and r["method"] == method),
                            key=lambda r: r["labels"])
            if not points:
                continue
            name = series_name(key, series) + (" (too short to compare)" if series in short else "")
            fig.add_trace(go.Scatter(
                x=[r["labels"] for r in points], y=[100 * r["accuracy"] for r in points], mode="lines+markers",
                name=name, legendgroup=series, text=[r["model"] for r in points],
                line={"color": COLOURS[key], "dash": dash, "width": 2 if pretrained else 1.5},
                marker={"size": 10 if pretrained else 12, "color": COLOURS[key],
                        "symbol": SYMBOLS[key] + ("" if pretrained else "-open"),
                        "line": {"width": 0 if pretrained else 2, "color": COLOURS[key]}},
                hovertemplate=f"{SHORT_NAMES[key]} · %{{text}}<br>%{{x:,}} labels: %{{y:.1f}} %<extra></extra>"))
    budgets = sorted({r["labels"] for r in rows})
    fig.update_xaxes(type="log", title="labelled training images", tickvals=budgets,
                     ticktext=[f"{b:,}" for b in budgets])
    fig.update_yaxes(title="test accuracy (%)", range=[0, 102])     # chance on 10 classes is 10 %
    fig.update_layout(height=420 + 22 * len(runs), margin={"l": 10, "r": 10, "t": 30, "b": 10}, showlegend=True,
                      legend={"orientation": "h", "y": -0.22, "yanchor": "top", "x": 0.0, "xanchor": "left"})
    return fig


def labelled_examples(full_train: ImageData, recipe: dict[str, Any]) -> ImageData | str:
    """The training images the run kept labels for, replayed from its recipe; or why not.

    Zoo models: `split_off(full, val_fraction, seed)` then `mask_labels(labels, n, seed)` on the
    training part. App-trained models (recipe has `train_images`): the same seeded choice of
    images first (`aecore.lab.jobs.prepare_split`).
    """
    trained_on = recipe.get("train_split", "train")
    if full_train.split != trained_on:
        return (f"this model was trained on the {trained_on} split of {full_train.name}, but only the "
                f"{full_train.split} split is on this machine, so its labelled images cannot be looked up")
    seed = int(recipe.get("seed", 0) or 0)
    data = full_train
    if "train_images" in recipe:
        from aecore.lab.jobs import prepare_split
        data, _ = prepare_split(full_train, max_images=recipe.get("max_images"), seed=seed,
                                val_fraction=float(recipe.get("val_fraction") or 0.0))
    elif recipe.get("val_fraction"):
        data, _ = split_off(full_train, float(recipe["val_fraction"]), seed=seed)
    kept = mask_labels(data.labels, recipe.get("labels"), seed=seed)
    index = torch.nonzero(kept >= 0).flatten()
    if len(index) > MAX_HIGHLIGHT:
        pick = torch.randperm(len(index), generator=torch.Generator().manual_seed(seed))[:MAX_HIGHLIGHT]
        index = index[torch.sort(pick).values]
    return data.subset(index)


def project_with_test_pca(test_codes: Tensor | np.ndarray, other_codes: Tensor | np.ndarray | None = None
                          ) -> tuple[np.ndarray, np.ndarray | None]:
    """(N, d) test codes -> (N, 2) map on their first two principal components, and (M, d) other
    codes -> (M, 2) with the *same* PCA (so both lie on one map). d < 2: the missing axis is 0."""
    test_codes = torch.as_tensor(test_codes).float().reshape(len(test_codes), -1)
    other_codes = None if other_codes is None else torch.as_tensor(other_codes)
    d = test_codes.shape[1]
    k = min(2, d)
    pca = PCA.fit(test_codes, k)

    def proj(codes: Tensor) -> np.ndarray:
        out = pca.encode(codes.float().reshape(codes.shape[0], -1)).numpy()
        return np.pad(out, ((0, 0), (0, 2 - k))) if k < 2 else out

    return proj(test_codes), (proj(other_codes) if other_codes is not None else None)


def map_figure(coords: np.ndarray, labels: np.ndarray, classes: list[str],
               labelled: np.ndarray | None = None, labelled_classes: np.ndarray | None = None):
    """Plotly: the test split's map coloured by class (faint), the labelled training images on top
    (large, outlined, same class colours)."""
    import plotly.express as px
    import plotly.graph_objects as go

    palette = px.colors.qualitative.D3 + px.colors.qualitative.Plotly
    fig = go.Figure()
    labels = np.asarray(labels)
    for c in np.unique(labels):
        mask = labels == c
        name = classes[c] if 0 <= c < len(classes) else str(c)
        fig.add_trace(go.Scattergl(x=coords[mask, 0], y=coords[mask, 1], mode="markers", name=name,
                                   legendgroup=name, marker={"size": 4, "opacity": 0.35,
                                                             "color": palette[int(c) % len(palette)]},
                                   hovertemplate=f"test image, class {name}<extra></extra>"))
    if labelled is not None and len(labelled):
        lab = np.asarray(labelled_classes)
        colours = [palette[int(c) % len(palette)] for c in lab]
        names = [classes[c] if 0 <= c < len(classes) else str(c) for c in lab]
        fig.add_trace(go.Scattergl(x=labelled[:, 0], y=labelled[:, 1], mode="markers",
                                   name=f"labelled training images ({len(labelled):,})", text=names,
                                   marker={"size": 11, "color": colours, "symbol": "star",
                                           "line": {"width": 1.5, "color": "black"}},
                                   hovertemplate="labelled training image, class %{text}<extra></extra>"))
    fig.update_layout(height=520, margin={"l": 10, "r": 10, "t": 30, "b": 10},
                      xaxis_title="PC 1 of the codes", yaxis_title="PC 2 of the codes")
    return fig
