"""The pretrained zoo: recorded recipes, one build command, measured metrics, precomputed maps.

`aecore zoo build --data-dir DIR` trains every recipe below on every dataset it lists and writes
`pretrained/<dataset>/<id>/` (model.safetensors, config.json, metrics.json, maps.npz) and
`pretrained/manifest.json` through `aecore.pipeline`, as the CLI and the app save their models.
Metrics are measured on the float16-rounded weights that ship, with the same `evaluate()` that
`aecore eval` runs, so the two agree. A killed build resumes from the last finished epoch of the
model it was training (its checkpoint lives in `pretrained/.build/`).
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from aecore.data import load_dataset
from aecore.data.base import split_off
from aecore.errors import ConfigError
from aecore.maps import MAPS, write_maps
from aecore.measures import binarized_nll, pca_baseline, semi_baselines, train_test_gap
from aecore.models import SEMI_SUPERVISED, get_model_class, has_role
from aecore.paths import pretrained_dir
from aecore.pipeline import initial_model, measure, recipe_record, round_to_stored, save_trained
from aecore.store import write_manifest
from aecore.train import TrainConfig, Trainer

log = logging.getLogger("aecore")

MNIST_LIKE = ("mnist", "fashion-mnist")
VAL_FRACTION = 0.05


@dataclass(frozen=True)
class Recipe:
    """One pretrained model: architecture, training recipe, datasets, and what to measure."""

    id: str
    model: str
    config: dict[str, Any]
    train: dict[str, Any]
    about: str
    datasets: tuple[str, ...] = MNIST_LIKE
    extras: tuple[str, ...] = ()         # extra measurements: "nll", "semi", "pca_angles", "gap"
    half: bool = True                    # store weights as float16 (metrics are measured after)

    @property
    def noise(self) -> str | None:
        return self.train.get("noise")


def _r(id: str, model: str, about: str, config: dict | None = None, **train: Any) -> Recipe:
    extras = tuple(train.pop("extras", ()))
    datasets = tuple(train.pop("datasets", MNIST_LIKE))
    return Recipe(id=id, model=model, config=config or {}, train={"seed": 0, **train}, about=about,
                  datasets=datasets, extras=extras)


COSINE = {"lr_schedule": "cosine"}
RECIPES: dict[str, Recipe] = {r.id: r for r in [
    _r("ae-d2", "ae", "MLP autoencoder with a 2-D code: its latent space is the map itself",
       {"hidden": [512, 256], "latent_dim": 2}, epochs=100, batch_size=128, lr=2e-3, **COSINE),
    _r("ae-d32", "ae", "MLP autoencoder, 32-D code",
       {"hidden": [512, 256], "latent_dim": 32}, epochs=30, batch_size=128, lr=2e-3, **COSINE),
    _r("conv-ae-d32", "conv-ae", "convolutional autoencoder, 32-D code",
       {"latent_dim": 32}, epochs=30, batch_size=128, lr=2e-3, **COSINE),
    _r("linear-ae-d32", "linear-ae", "linear autoencoder: learns PCA's 32-D principal subspace",
       {"latent_dim": 32}, epochs=100, batch_size=256, lr=1e-3, extras=("pca_angles",), **COSINE),
    _r("stacked-ae", "stacked-ae", "stacked AE, tied weights, greedy layer-wise pretraining then fine-tuning",
       {"hidden": [256, 64], "latent_dim": 32}, epochs=15, stage_epochs=5, batch_size=128, lr=1e-3),
    _r("dae-gaussian", "ae", "denoising AE trained on Gaussian noise sigma = 0.5",
       {"hidden": [256], "latent_dim": 64}, epochs=30, batch_size=128, lr=2e-3, noise="gaussian:0.5", **COSINE),
    _r("dae-masking", "ae", "denoising AE trained on masking noise nu = 0.5",
       {"hidden": [256], "latent_dim": 64}, epochs=60, batch_size=128, lr=2e-3, noise="masking:0.5", **COSINE),
    _r("dae-saltpepper", "ae", "denoising AE trained on salt-and-pepper noise nu = 0.2",
       {"hidden": [256], "latent_dim": 64}, epochs=30, batch_size=128, lr=2e-3, noise="saltpepper:0.2",
       **COSINE),
    # trained as Conerly et al. 2024 (aecore.models.sparse_ae): L1 weighted by decoder column norms, W_enc =
    # W_dec^T at norm 0.1, lambda warmed up over the first 445 steps (5 %); plain L1 reached 85 % zeros only
    # with 210-220 of 256 units dead, this one 85.4 % (MNIST) / 88.6 % (Fashion) with 0 / 10 dead
    _r("sparse-ae-l1", "sparse-ae", "one-layer sparse AE, 256 ReLU units, L1 penalty weighted by decoder norms "
       "(Conerly et al. 2024)",
       {"latent_dim": 256, "penalty": "l1", "weight": 0.17, "l1_decoder_norm": True, "init_decoder_norm": 0.1,
        "weight_warmup_steps": 445}, epochs=20, batch_size=128, lr=3e-3, **COSINE),
    # beta 10, lr 1e-2 and Ng's weight decay: the mean activation lands within 25 % of p (beta 3 left it 0.072)
    _r("sparse-ae-kl", "sparse-ae", "one-layer sparse AE, 256 sigmoid units, KL to target rate p = 0.05",
       {"latent_dim": 256, "penalty": "kl", "target_rate": 0.05, "weight": 10.0}, epochs=20, batch_size=128, lr=1e-2,
       weight_decay=1e-4, **COSINE),
    # aux_alpha 1/8, not the paper's 1/32: at 1/32 4 of 256 units stayed dead on MNIST (1.6 %), at 1/8 one
    _r("topk-ae", "topk-ae", "k-sparse AE (Gao et al. 2024): 256 units, 25 on per image, AuxK revives dead units",
       {"latent_dim": 256, "k": 25, "aux_alpha": 0.125}, epochs=15, batch_size=128, lr=2e-3, **COSINE),
    _r("ae-256", "ae", "plain one-layer AE with 256 ReLU units: the sparse AEs' unregularised twin",
       {"hidden": [], "latent_dim": 256, "code_activation": "relu", "loss": "bce"},
       epochs=20, batch_size=128, lr=1e-3, **COSINE),
    _r("contractive-ae", "contractive-ae", "contractive AE: one sigmoid layer, Jacobian penalty lambda = 0.1",
       {"latent_dim": 128}, epochs=20, batch_size=128, lr=1e-3, **COSINE),
    _r("hyper-ae", "hyper-ae", "hyper autoencoder: one embedding -> linear hypernetwork -> all AE weights",
       {}, epochs=30, batch_size=128, lr=2e-3, **COSINE),
    _r("hyper-ae-vanilla", "hyper-ae-vanilla", "the hyper AE's ordinary twin: same MLP, weights trained directly",
       {}, epochs=30, batch_size=128, lr=2e-3, **COSINE),
    _r("vae-d2", "vae", "MLP VAE with a 2-D latent: decoded manifold grid",
       {"hidden": [512], "latent_dim": 2}, epochs=30, batch_size=128, lr=1e-3, **COSINE),
    _r("vae-d32", "vae", "MLP VAE, 32-D latent, trained on dynamically binarised images (for the NLL)",
       {"hidden": [512, 256], "latent_dim": 32}, epochs=60, batch_size=128, lr=1e-3, binarize=True,
       extras=("nll",), **COSINE),
    _r("conv-vae-d32", "conv-vae", "convolutional VAE, 32-D latent, dynamically binarised training",
       {"latent_dim": 32}, epochs=10, batch_size=128, lr=1e-3, binarize=True, **COSINE),
    _r("hyper-semi-100", "hyper-semi", "semi-supervised CNN + hypernetwork AE, 100 labels",
       {}, epochs=4, batch_size=128, lr=1e-3, labels=100, labelled_per_batch=16, extras=("semi",), **COSINE),
    _r("hyper-semi-1000", "hyper-semi", "semi-supervised CNN + hypernetwork AE, 1000 labels",
       {}, epochs=4, batch_size=128, lr=1e-3, labels=1000, labelled_per_batch=16, extras=("semi",), **COSINE),
    _r("unet-denoise", "unet", "U-Net denoiser (skips), Gaussian sigma = 0.5",
       {"base_channels": 16, "task": "denoise"}, epochs=3, batch_size=64, lr=2e-3, noise="gaussian:0.5",
       **COSINE),
    _r("rank-ordered-ae", "rank-ordered-ae", "rank-ordered AE (Bertens 2016), 169 units, trained by the "
       "author's reference rule (its own per-example update, lr 1, norm clip 0.1: no Adam)",
       {"latent_dim": 169, "rule": "reference"}, epochs=5, batch_size=128,
       datasets=("cifar10-patches", *MNIST_LIKE), extras=("gap",)),
]}


def recipe_ids() -> list[str]:
    """All '<dataset>/<id>' the zoo builds, in build order."""
    return [f"{ds}/{r.id}" for r in RECIPES.values() for ds in r.datasets]


# --- build ------------------------------------------------------------------------------------------
def build_one(recipe: Recipe, dataset: str, *, root: Path, data_dir: str | None = None,
              device: str | None = None, callbacks: Iterable[Any] = (),
              map_methods: tuple[str, ...] = ("umap",)) -> dict[str, Any]:
    """Train, measure, save and map one pretrained model; returns its metrics. Only the UMAP map ships
    (minutes to compute): the pages project the codes with PCA themselves in milliseconds, and leaving
    it out keeps pretrained/ under its 40 MB (37 KB a model)."""
    t0 = time.perf_counter()
    full = load_dataset(dataset, "train", data_dir=data_dir)
    test = load_dataset(dataset, "test", data_dir=data_dir)
    if full.split == "test":
        raise ConfigError(f"{dataset}: only the bundled test split was found; the zoo trains on the "
                          "full training split (pass --data-dir)")
    train, val = split_off(full, VAL_FRACTION, seed=recipe.train["seed"])
    model = initial_model(recipe.model, dict(recipe.config, input_shape=list(train.input_shape)),
                          seed=recipe.train["seed"])
    config = TrainConfig.from_dict(recipe.train, where=f"recipe {recipe.id}")
    work = root / ".build" / dataset / recipe.id
    work.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(model, train, config=config, val=val, callbacks=callbacks, device=device,
                      checkpoint_dir=work)
    resume = (work / "checkpoint.safetensors").exists()
    result = trainer.fit(resume=resume)
    if result.cancelled:
        raise KeyboardInterrupt
    round_to_stored(model, half=recipe.half)          # measure what ships (float16-rounded weights)
    metrics, codes = measure(model, test, noise=recipe.noise)
    k = getattr(model.config, "latent_dim", None)
    # PCA needs k < D; a semi-supervised model is measured by its accuracy instead
    pca_fair = not get_model_class(recipe.model).no_pca_baseline and not has_role(recipe.model, SEMI_SUPERVISED)
    if k and k < math.prod(train.input_shape) and pca_fair:
        metrics.update(pca_baseline(full, test, k))
    if "nll" in recipe.extras:
        metrics.update(binarized_nll(model, test))
    if "pca_angles" in recipe.extras:
        from aecore.models.linear_ae import principal_angles_to_pca
        angles = principal_angles_to_pca(model, full.as_float().to(model.decoder.weight.device))
        metrics["max_principal_angle_deg"] = round(float(angles.max()), 3)
        metrics["mean_principal_angle_deg"] = round(float(angles.mean()), 3)
    if "semi" in recipe.extras:
        # the model's own training split: mask_labels then picks exactly the labels the model had
        metrics.update(semi_baselines(train, test, recipe.train["labels"], recipe.config,
                                      seed=recipe.train["seed"], device=device))
    if "gap" in recipe.extras:
        metrics.update(train_test_gap(model, train, test))
    out = root / dataset / recipe.id
    metrics = save_trained(model, out, result=result, metrics=metrics, dataset=dataset, classes=train.classes,
                           recipe=recipe_record(config, val_fraction=VAL_FRACTION, zoo_id=recipe.id),
                           notes=recipe.about, half=recipe.half)
    write_maps(out, codes, test.labels, methods=map_methods)
    shutil.rmtree(work, ignore_errors=True)
    log.info("%s/%s: mse %.5f (%.0f s)", dataset, recipe.id, metrics["mse"], time.perf_counter() - t0)
    return metrics


def build(*, only: Iterable[str] = (), root: str | Path | None = None, data_dir: str | None = None,
          device: str | None = None, skip_existing: bool = False,
          progress: Callable[[str], None] | None = None) -> list[str]:
    """Build the zoo (or the ids in `only`: 'ID' for every dataset, or 'DATASET/ID'); returns the ids built."""
    root = Path(root) if root else pretrained_dir()
    wanted = set(only)
    unknown = {w for w in wanted if w not in RECIPES and w not in recipe_ids()}
    if unknown:
        raise ConfigError(f"unknown zoo id(s): {', '.join(sorted(unknown))}; known: {', '.join(RECIPES)}")
    built = []
    for full_id in recipe_ids():
        dataset, rid = full_id.split("/", 1)
        if wanted and rid not in wanted and full_id not in wanted:
            continue
        if skip_existing and (root / full_id / MAPS).exists():
            continue
        if progress:
            progress(full_id)
        build_one(RECIPES[rid], dataset, root=root, data_dir=data_dir, device=device)
        write_manifest(root)
        built.append(full_id)
    return built
