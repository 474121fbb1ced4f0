"""hyper-ae, hyper-ae-vanilla and hyper-semi: generated shapes, parameter budget, gradients, semi-supervised loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from aecore.errors import ConfigError
from aecore.models import build_model, get_model_class
from aecore.models.hyper_ae import HyperAE, HyperAEVanilla, PrimaryMLP
from aecore.models.hyper_semi import HyperSemi


def tiny_ae(**overrides) -> HyperAE:
    config = HyperAE.small_config((1, 8, 8)).replace(**overrides)
    return HyperAE(config=config)


def tiny_semi(**overrides) -> HyperSemi:
    config = HyperSemi.small_config((1, 12, 12)).replace(**overrides)
    return HyperSemi(config=config)


def train_steps(model, x, y=None, steps=40, lr=1e-2) -> list[float]:
    opt = torch.optim.Adam(model.parameters(), lr)
    losses = []
    for _ in range(steps):
        out = model(x, y=y)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(float(out.loss.detach()))
    return losses


def structured(n: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Images that are mixtures of 3 fixed patterns: learnable by a small AE."""
    d = torch.Size(shape).numel()
    return (torch.rand(n, 3) @ torch.rand(3, d) / 3).view(n, *shape)


# --- hyper-ae ------------------------------------------------------------------------------------
def test_default_config_generates_primary_shapes_with_half_the_parameters():
    model = build_model("hyper-ae", input_shape=[1, 28, 28])
    weights = model.generated_weights()
    assert [(n, tuple(t.shape)) for n, t in weights.items()] == model.primary_architecture()
    d, (h,), k = 784, model.config.hidden, model.config.latent_dim
    assert weights["encoder.0.weight"].shape == (h, d)
    assert weights["encoder.1.weight"].shape == (k, h)
    assert weights["decoder.1.weight"].shape == (d, h)
    assert model.primary_parameter_count() == 2 * (d * h + h * k) + h + k + h + d
    assert model.hyper_parameter_count() == model.num_parameters()
    assert model.hyper_parameter_count() <= 0.5 * model.primary_parameter_count()


def test_generated_weights_start_at_lecun_scale():
    model = build_model("hyper-ae", input_shape=[1, 28, 28])
    for name, tensor in model.generated_weights().items():
        if name.endswith("weight"):
            fan_in = tensor.shape[1]
            assert tensor.std().item() == pytest.approx(fan_in ** -0.5, rel=0.35), name


def test_gradients_reach_embedding_and_generator():
    model = tiny_ae()
    model(torch.rand(4, 1, 8, 8)).loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert model.embedding is model.hyper.embedding
    assert isinstance(model.embedding, torch.nn.Parameter)


def test_with_embedding_reproduces_the_model_and_other_embeddings_differ():
    model = tiny_ae()
    train_steps(model, structured(16, (1, 8, 8)), steps=5)
    x = torch.rand(5, 1, 8, 8)
    primary = model.with_embedding(model.embedding)
    assert isinstance(primary, PrimaryMLP)
    assert torch.allclose(primary(x), model.reconstruct(x), atol=1e-6, rtol=0)
    assert torch.allclose(primary.encode(x), model.encode(x), atol=1e-6, rtol=0)
    other = model.with_embedding(model.embedding.detach() + torch.randn_like(model.embedding))
    mine = model.generated_weights()
    for name, tensor in other.weights().items():
        assert tensor.shape == mine[name].shape
        assert not torch.allclose(tensor, mine[name]), name
    with pytest.raises(ValueError, match="shape"):
        model.with_embedding(torch.zeros(3, 2))


def test_vanilla_twin_has_the_same_primary_architecture():
    model = build_model("hyper-ae", input_shape=[1, 28, 28], hidden=[64, 32], latent_dim=10)
    name, config = model.vanilla_twin_config()
    twin = build_model(name, config)
    assert isinstance(twin, HyperAEVanilla)
    generated = {n: tuple(t.shape) for n, t in model.generated_weights().items()}
    assert {n: tuple(p.shape) for n, p in twin.named_parameters()} == generated
    assert twin.num_parameters() == model.primary_parameter_count()
    assert twin.primary_architecture() == model.primary_architecture()
    x = torch.rand(3, 1, 28, 28)
    assert twin(x).recon.shape == x.shape and twin.encode(x).shape == (3, 10)


@pytest.mark.parametrize("name", ["hyper-ae", "hyper-ae-vanilla"])
def test_loss_falls(name):
    cls = get_model_class(name)
    model = cls(config=cls.small_config((1, 8, 8)))
    x = structured(32, (1, 8, 8))
    losses = train_steps(model, x)
    assert losses[-1] < 0.5 * losses[0]


def test_bce_loss_option_and_config_checks():
    model = tiny_ae(loss="bce")
    x = torch.rand(4, 1, 8, 8)
    out = model(x)
    logits = torch.logit(out.recon.clamp(1e-6, 1 - 1e-6)).flatten(1)
    expected = F.binary_cross_entropy_with_logits(logits, x.flatten(1), reduction="sum") / 4
    assert out.parts["recon"].item() == pytest.approx(expected.item(), rel=1e-3)
    with pytest.raises(ConfigError, match="embedding_dim"):
        build_model("hyper-ae", embedding_dim=-1)
    with pytest.raises(ConfigError, match="chunk_size"):
        build_model("hyper-ae", chunk_size=-1)


# --- hyper-semi ----------------------------------------------------------------------------------
def test_semi_generates_encoder_and_decoder_weights():
    model = build_model("hyper-semi", input_shape=[1, 28, 28])
    weights = model.generated_weights()
    assert weights["encoder.conv.0.weight"].shape == (32, 1, 3, 3)
    assert weights["decoder.deconv.2.weight"].shape == (32, 1, 3, 3)
    assert model.hyper_parameter_count() <= 0.5 * model.primary_parameter_count()
    x = torch.rand(4, 1, 28, 28)
    out = model(x, y=torch.tensor([1, -1, 2, -1]))
    assert out.recon.shape == x.shape and out.z.shape == (4, 64)
    assert out.extras["logits"].shape == (4, 10)
    out.loss.backward()
    assert model.embedding.grad.abs().sum() > 0 and model.hyper.generator.weight.grad.abs().sum() > 0
    assert not HyperSemi.supports((64,)) and not HyperSemi.supports((1, 6, 6)) and HyperSemi.supports((3, 32, 32))


def test_semi_cross_entropy_uses_only_labelled_rows():
    model = tiny_semi().eval()   # eval: batch norm uses running stats, so rows do not interact
    x = torch.rand(6, 1, 12, 12)
    y = torch.tensor([3, -1, 0, -1, -1, 7])
    out = model(x, y=y)
    labelled = y >= 0
    expected = F.cross_entropy(out.extras["logits"][labelled], y[labelled])
    assert out.parts["ce"].item() == pytest.approx(expected.item(), rel=1e-6)
    x2 = x.clone()
    x2[~labelled] = torch.rand(3, 1, 12, 12)   # unlabelled rows change: CE does not
    assert model(x2, y=y).parts["ce"].item() == pytest.approx(out.parts["ce"].item(), rel=1e-6)
    none = model(x, y=torch.full((6,), -1))
    assert torch.is_tensor(none.parts["ce"]) and none.parts["ce"].item() == 0.0
    assert model(x).parts["ce"].item() == 0.0
    model.train()
    unlabelled = model(x, y=torch.full((6,), -1))
    unlabelled.loss.backward()     # reconstruction (and VAT) still train the model
    assert model.embedding.grad.abs().sum() > 0
    assert set(unlabelled.parts) == {"ce", "recon", "vat", "entropy", "marginal"}


def test_semi_accuracy_on_a_hand_set_case():
    model = tiny_semi()
    last = model.head[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
        last.bias[3] = 5.0               # every image is predicted as class 3
    x = torch.rand(4, 1, 12, 12)
    assert model.predict(x).tolist() == [3, 3, 3, 3]
    acc = model.eval_metrics(x, torch.tensor([3, 1, 3, 0]))["accuracy"]
    assert acc.tolist() == [1.0, 0.0, 1.0, 0.0]
    part = model.eval_metrics(x, torch.tensor([3, -1, 1, -1]))["accuracy"]
    assert part[0] == 1.0 and part[2] == 0.0 and torch.isnan(part[[1, 3]]).all()
    assert model.eval_metrics(x, None) == {}


def test_semi_loss_falls_and_learns_labels_on_tiny_data():
    torch.manual_seed(0)
    x = structured(32, (1, 12, 12))
    y = (x.flatten(1).mean(1) > x.flatten(1).mean(1).median()).long()  # a learnable 2-class rule
    y_semi = torch.where(torch.arange(32) % 2 == 0, y, torch.full_like(y, -1))
    model = tiny_semi(n_classes=2)
    losses = train_steps(model, x, y_semi, steps=40)
    assert losses[-1] < 0.5 * losses[0]
    logits = model(x, y=y_semi).extras["logits"]   # training-mode batch norm: running stats still lag
    assert (logits.argmax(1) == y).float().mean() >= 0.9


def test_semi_state_dict_round_trip_and_deterministic_inference():
    model = tiny_semi()
    x = structured(16, (1, 12, 12))
    train_steps(model, x, torch.randint(0, 10, (16,)), steps=3)
    model.train()
    first = model.reconstruct(x)
    assert torch.equal(first, model.reconstruct(x))          # no dropout/batch stats at inference
    assert model.training                                     # and the mode is left as it was
    clone = HyperSemi(config=type(model.config).from_dict(model.config.to_dict()))
    clone.load_state_dict(model.state_dict())
    assert torch.equal(clone.reconstruct(x), first)
    assert torch.equal(clone.predict(x), model.predict(x))
