"""A tiny stand-in for pretrained/: one small model per family, trained for seconds on 2,000
bundled MNIST test images, measured and saved as the zoo saves (`aecore.pipeline`: safetensors +
config + metrics + maps + manifest). Page tests run against it, so they do not depend on what
pretrained/ ships."""

from __future__ import annotations

from pathlib import Path

from aecore.data import load_dataset
from aecore.maps import write_maps
from aecore.measures import pca_baseline
from aecore.models import SEMI_SUPERVISED, get_model_class, has_role
from aecore.pipeline import initial_model, measure, recipe_record, save_trained
from aecore.store import write_manifest
from aecore.train import TrainConfig, Trainer

# id -> (model, config, training options)
TINY = {
    "ae-d2": ("ae", {"hidden": [64], "latent_dim": 2}, {}),
    "ae-d8": ("ae", {"hidden": [64], "latent_dim": 8}, {}),
    "dae-gaussian": ("ae", {"hidden": [64], "latent_dim": 8}, {"noise": "gaussian:0.5"}),
    "linear-ae-d8": ("linear-ae", {"latent_dim": 8}, {}),
    "conv-ae-d8": ("conv-ae", {"latent_dim": 8, "channels": [4, 8]}, {}),
    "stacked-ae": ("stacked-ae", {"hidden": [32], "latent_dim": 8}, {"stage_epochs": 1}),
    "sparse-ae-kl": ("sparse-ae", {"latent_dim": 32, "penalty": "kl"}, {}),
    "sparse-ae-l1": ("sparse-ae", {"latent_dim": 32, "penalty": "l1"}, {}),
    "contractive-ae": ("contractive-ae", {"latent_dim": 16}, {}),
    "vae-d2": ("vae", {"hidden": [64], "latent_dim": 2}, {}),
    "hyper-ae": ("hyper-ae", {"hidden": [32], "latent_dim": 8}, {}),
    "hyper-ae-vanilla": ("hyper-ae-vanilla", {"hidden": [32], "latent_dim": 8}, {}),
    "hyper-semi-100": ("hyper-semi", {"channels": [4, 8], "latent_dim": 8, "head_hidden": 16, "embedding_dim": 8},
                       {"labels": 100}),
    "rank-ordered-ae": ("rank-ordered-ae", {"latent_dim": 16}, {}),
    "unet-denoise": ("unet", {"base_channels": 4, "depth": 2}, {"noise": "gaussian:0.5"}),
}


def build_tiny_zoo(root: Path, *, dataset: str = "mnist", n: int = 2000) -> list[str]:
    data = load_dataset(dataset, "test")
    train, test = data.subset(slice(0, n)), data.subset(slice(n, n + 500))
    for model_id, (name, config, options) in TINY.items():
        model = initial_model(name, dict(config, input_shape=list(data.input_shape)), seed=0)
        recipe = TrainConfig(epochs=2, batch_size=100, lr=2e-3, **options)
        result = Trainer(model, train, config=recipe, device="cpu").fit()
        out = root / dataset / model_id
        metrics, codes = measure(model, test, noise=recipe.noise)
        k = getattr(model.config, "latent_dim", None)      # as the zoo does: PCA of the code's size
        if k and not get_model_class(name).no_pca_baseline and not has_role(name, SEMI_SUPERVISED):
            metrics.update(pca_baseline(train, test, k))
        save_trained(model, out, result=result, metrics=metrics, dataset=dataset, classes=data.classes,
                     recipe=recipe_record(recipe, val_fraction=0.0), notes=f"tiny test model ({name})")
        write_maps(out, codes, test.labels, methods=("pca",))
    write_manifest(root)
    return [f"{dataset}/{m}" for m in TINY]
