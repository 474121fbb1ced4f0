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
