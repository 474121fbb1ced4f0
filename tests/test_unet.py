"""U-Net: shapes, the skip switch, segmentation (loss, IoU) and denoising on tiny structured data."""

from __future__ import annotations

import pytest
import torch

from aecore.errors import ConfigError
from aecore.models import build_model, get_model_class
from aecore.models.unet import UNet, UNetConfig, foreground_mask, iou
from aecore.noise import gaussian


def _rects(n: int, side: int = 16, channels: int = 1) -> torch.Tensor:
    """Bright axis-aligned rectangles on a dark background, (n, channels, side, side)."""
    x = torch.zeros(n, channels, side, side)
    for i in range(n):
        top, left = torch.randint(0, side - 6, (2,)).tolist()
        h, w = torch.randint(4, 7, (2,)).tolist()
        x[i, :, top:top + h, left:left + w] = 0.9
    return x


def _train(model, x, target=None, steps=40, lr=1e-2, noise=None):
    opt = torch.optim.Adam(model.parameters(), lr)
    losses = []
    for _ in range(steps):
        inp = x if noise is None else noise(x)
        out = model(inp, target=target)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    return losses


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
@pytest.mark.parametrize("task", ["denoise", "segment"])
def test_shapes(shape, task):
    model = UNet(config=UNet.small_config(shape).replace(task=task))
    x = torch.rand(2, *shape)
    out = model(x)
    assert out.recon.shape == x.shape and out.z.shape == (2, 8)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss) and set(out.parts) == {"recon"}
    assert model.encode(x).shape == (2, 8) and model.decode(out.z).shape == x.shape
    assert torch.allclose(model.reconstruct(x), out.recon)
    if task == "segment":
        assert out.extras["mask"].shape == (2, 1, *shape[1:])
        assert torch.equal(out.recon, out.extras["mask"].expand_as(x))
        assert model.eval_metrics(x)["iou"].shape == (2,)
    else:
        assert model.eval_metrics(x) == {}


def test_odd_sizes_are_padded_and_cropped():
    model = build_model("unet", input_shape=[3, 7, 9], base_channels=4, depth=2, latent_dim=4)
    assert model.sizes == [(7, 9), (4, 5), (2, 3)]
    assert model(torch.rand(2, 3, 7, 9)).recon.shape == (2, 3, 7, 9)


def test_skips_off_removes_concatenation_and_still_trains():
    on = build_model("unet", input_shape=[1, 16, 16], base_channels=4, depth=2, latent_dim=4)
    off = build_model("unet", input_shape=[1, 16, 16], base_channels=4, depth=2, latent_dim=4, skips=False)
    # decoder blocks take skip + upsampled channels when skips are on, upsampled only when off
    assert [blk[0].in_channels for blk in on.up_conv] == [16, 8]
    assert [blk[0].in_channels for blk in off.up_conv] == [8, 4]
    assert off.num_parameters() < on.num_parameters()
    x = _rects(16)
    losses = _train(off, x, steps=30)
    assert losses[-1] < 0.5 * losses[0]


def test_skips_carry_information_the_code_does_not():
    """With skips, changing the input's fine detail changes the output even if z is unchanged."""
    model = build_model("unet", input_shape=[1, 16, 16], base_channels=4, depth=1, latent_dim=2)
    x = torch.rand(1, 1, 16, 16)
    assert not torch.allclose(model.reconstruct(x), model.decode(model.encode(x)))


def test_foreground_mask_any_channel():
    img = torch.zeros(1, 3, 2, 2)
    img[0, 2, 0, 1] = 0.8      # only the blue channel is bright here
    img[0, 0, 1, 1] = 0.4      # below threshold
    assert torch.equal(foreground_mask(img), torch.tensor([[[[0.0, 1.0], [0.0, 0.0]]]]))


def test_iou_on_hand_made_masks():
    pred = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]).float()
    true = torch.tensor([[1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 1]]).float()
    # 1/2 overlap; perfect; both empty counts as perfect; disjoint
    assert torch.allclose(iou(pred, true), torch.tensor([0.5, 1.0, 1.0, 0.0]))


def test_segment_loss_falls_and_iou_rises():
    model = build_model("unet", input_shape=[1, 16, 16], base_channels=8, depth=1, latent_dim=4,
                        task="segment")
    clean = _rects(16)
    noisy = (clean + 0.2 * torch.randn_like(clean)).clamp(0, 1)
    before = model.eval_metrics(clean)["iou"].mean()
    losses = _train(model, noisy, target=clean, steps=40)
    assert losses[-1] < 0.3 * losses[0]
    assert model.eval_metrics(clean)["iou"].mean() > max(0.8, before)


def test_denoise_output_closer_to_clean_than_noisy_input():
    model = build_model("unet", input_shape=[1, 16, 16], base_channels=8, depth=1, latent_dim=4)
    clean = _rects(32)
    gen = torch.Generator().manual_seed(1)
    _train(model, clean, target=clean, steps=80, noise=lambda x: gaussian(x, 0.3, generator=gen))
    test = _rects(16)
    noisy = gaussian(test, 0.3, generator=gen)
    out_err = (model.reconstruct(noisy) - test).pow(2).mean()
    in_err = (noisy - test).pow(2).mean()
    assert out_err < 0.7 * in_err   # typically 0.05-0.2; 0.6 for the slowest of 10 seeds


def test_config_checks():
    assert not get_model_class("unet").supports((64,))
    with pytest.raises(ConfigError, match="depth"):
        UNetConfig.from_dict({"input_shape": [1, 8, 8], "depth": 4})
    with pytest.raises(ConfigError, match="task"):
        UNetConfig.from_dict({"task": "classify"})
    with pytest.raises(ConfigError, match="does not support"):
        build_model("unet", input_shape=[64])
