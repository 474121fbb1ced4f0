import math

import torch

from aecore.data.base import ImageData
from aecore.evaluate import evaluate, psnr
from aecore.models import build_model


def test_psnr_of_known_error():
    a = torch.zeros(2, 1, 4, 4)
    b = torch.full((2, 1, 4, 4), 0.1)  # MSE 0.01 -> 20 dB
    assert torch.allclose(psnr(a, b), torch.tensor([20.0, 20.0]))


def test_evaluate_reports_denoising_gain_and_skips_unlabelled_accuracy():
    torch.manual_seed(0)
    images = (torch.rand(40, 1, 8, 8) * 255).to(torch.uint8)
    labels = torch.arange(40) % 4
    labels[:10] = -1  # unlabelled rows must not turn accuracy into NaN
    data = ImageData(images=images, labels=labels, classes=list("abcd"), name="toy", split="test")
    model = build_model("hyper-semi", {"input_shape": [1, 8, 8], "n_classes": 4})
    metrics = evaluate(model, data, noise="masking:0.5", batch_size=16)
    assert metrics["n"] == 40 and 0 <= metrics["accuracy"] <= 1 and not math.isnan(metrics["accuracy"])
    assert math.isclose(metrics["psnr_gain"], metrics["psnr"] - metrics["noisy_psnr"], abs_tol=1e-5)
    assert metrics["noise"] == "masking:0.5"


def test_a_sampled_metric_is_seeded_and_leaves_the_callers_random_state_alone():
    """A VAE's ELBO is a one-sample estimate: with evaluate's seed it is the same figure every time
    (so `aecore eval` reproduces metrics.json), and the caller's random stream goes on untouched."""
    torch.manual_seed(0)
    images = (torch.rand(32, 1, 8, 8) * 255).to(torch.uint8)
    data = ImageData(images=images, labels=torch.zeros(32, dtype=torch.long), classes=["a"], name="toy", split="test")
    model = build_model("vae", {"input_shape": [1, 8, 8], "hidden": [16], "latent_dim": 4})
    torch.manual_seed(1)
    first = evaluate(model, data, batch_size=8)
    after_first = torch.rand(3)
    torch.manual_seed(2)
    second = evaluate(model, data, batch_size=8)
    assert first["elbo"] == second["elbo"]
    assert evaluate(model, data, batch_size=8, seed=5)["elbo"] != first["elbo"]
    torch.manual_seed(1)
    assert torch.equal(torch.rand(3), after_first)
