"""Measurements beyond `evaluate()` that the zoo build records and the app's jobs may add: the PCA
baseline, a VAE's importance-sampled NLL, the semi-supervised model's baselines, the train/test gap.
`evaluate()` is what `aecore eval` recomputes; these take a training split or train a model."""

from __future__ import annotations

import math

import torch

from aecore.data.base import ImageData
from aecore.evaluate import evaluate, per_image_mse
from aecore.models import SEMI_SUPERVISED, build_model, models_with
from aecore.noise import make_generator
from aecore.pca import PCA
from aecore.train import TrainConfig, Trainer, mask_labels


def pca_baseline(train: ImageData, test: ImageData, k: int) -> dict[str, float]:
    """Test MSE per pixel of PCA with k components fitted on the training split."""
    pca = PCA.fit(train.as_float(), k)
    x = test.as_float()
    return {"pca_components": k, "pca_mse": round(float(per_image_mse(pca.reconstruct(x), x).mean()), 6)}


@torch.no_grad()
def binarized_nll(model: torch.nn.Module, test: ImageData, *, k: int = 1000, seed: int = 0,
                  batch_size: int = 100) -> dict[str, float]:
    """Importance-sampled NLL (nats) on the test split binarised once with a fixed seed."""
    device = next(model.parameters()).device
    generator = make_generator(seed, device)
    total, n = 0.0, len(test)
    for start in range(0, n, batch_size):
        x = test.as_float(slice(start, min(start + batch_size, n))).to(device)
        xb = torch.bernoulli(x, generator=generator).view(-1, *model.config.input_shape)
        total += float(model.nll(xb, k=k, generator=generator).sum())
    return {"nll": round(total / n, 4), "nll_samples": k, "nll_data": "test split, binarised once (seed 0)"}


def semi_baselines(train: ImageData, test: ImageData, labels: int, config: dict, *, seed: int,
                   device: str | None) -> dict[str, float]:
    """Contrast for hyper-semi: the same CNN trained on the labelled images only, and PCA + logistic
    regression (PCA fitted on all training images, the classifier on the labelled ones)."""
    from sklearn.linear_model import LogisticRegression

    kept = mask_labels(train.labels, labels, seed=seed)
    labelled = train.subset(torch.nonzero(kept >= 0).flatten())
    supervised = dict(config, input_shape=list(train.input_shape), recon_weight=0.0, vat_weight=0.0,
                      entropy_weight=0.0, marginal_weight=0.0)
    model = build_model(models_with(SEMI_SUPERVISED)[0], supervised)
    batch = min(100, len(labelled))
    steps = 600
    epochs = math.ceil(steps / math.ceil(len(labelled) / batch))
    Trainer(model, labelled, config=TrainConfig(epochs=epochs, batch_size=batch, lr=1e-3, seed=seed),
            device=device).fit()
    scratch = evaluate(model, test)["accuracy"]
    pca = PCA.fit(train.as_float(), 50)
    clf = LogisticRegression(max_iter=2000).fit(pca.encode(labelled.as_float()).numpy(), labelled.labels.numpy())
    pca_acc = float((clf.predict(pca.encode(test.as_float()).numpy()) == test.labels.numpy()).mean())
    return {"scratch_cnn_accuracy": round(scratch, 4), "scratch_cnn_steps": steps,
            "pca_logreg_accuracy": round(pca_acc, 4), "pca_logreg_components": 50}


def train_test_gap(model: torch.nn.Module, train: ImageData, test: ImageData) -> dict[str, float]:
    """Mean loss on (a same-sized slice of) the training split vs the test split."""
    n = min(len(train), len(test))
    device = next(model.parameters()).device

    def mean_loss(data: ImageData) -> float:
        total = 0.0
        with torch.no_grad():
            for start in range(0, n, 1000):
                x = data.as_float(slice(start, min(start + 1000, n))).to(device).view(-1, *model.config.input_shape)
                total += float(model(x, target=x).loss) * x.shape[0]
        return total / n

    train_loss, test_loss = mean_loss(train), mean_loss(test)
    return {"train_loss": round(train_loss, 6), "test_loss": round(test_loss, 6),
            "generalisation_gap": round(test_loss - train_loss, 6)}
