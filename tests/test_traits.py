"""Models describe themselves: every registered model's traits agree with its config and with what it
can do, and nothing above `aecore/models` picks or describes a model by its registry name.

A model added later is covered here without touching this file.
"""

import ast
import dataclasses
from pathlib import Path

import pytest
import torch

from aecore.lab import hyper
from aecore.lab import vae as vl
from aecore.models import (BASELINE, GENERATIVE, GREEDY_STAGES, HYPERNETWORK, RANKED_CODE, ROLES, SEMI_SUPERVISED,
                           AutoEncoder, get_model_class, has_role, list_models, models_with, register_model)

ROOT = Path(__file__).resolve().parents[1]
SHAPES = [(1, 28, 28), (3, 32, 32), (64,)]
CODE_FUNCTIONS = {"identity", "relu", "sigmoid", "tanh", "trelu", "elu", "gelu", "leaky_relu"}
RECIPE_CALLS = {"_r", "Recipe"}          # the zoo's recipe table: a recipe names the model it trains


def small(name: str) -> AutoEncoder:
    cls = get_model_class(name)
    shape = next(s for s in SHAPES if cls.supports(s))
    return cls(config=cls.small_config(shape))


@pytest.mark.parametrize("name", list_models())
def test_roles_match_what_the_model_can_do(name):
    cls, model = get_model_class(name), small(name)
    assert isinstance(cls.roles, frozenset) and cls.roles <= ROLES
    assert (GENERATIVE in cls.roles) == vl.is_generative(model)          # the VAE lab's views need these
    assert (HYPERNETWORK in cls.roles) == hyper.is_hyper(model)
    assert (GREEDY_STAGES in cls.roles) == (len(model.stages()) > 1)
    assert (RANKED_CODE in cls.roles) == callable(getattr(model, "anytime_reconstruction", None))
    assert (SEMI_SUPERVISED in cls.roles) == callable(getattr(model, "predict", None))


@pytest.mark.parametrize("name", list_models())
def test_regularizer_weight_names_a_config_field(name):
    cls = get_model_class(name)
    weight = cls.regularizer_weight
    if weight is None:
        return
    fields = {f.name: f for f in dataclasses.fields(cls.config_class)}
    assert weight.field in fields and weight.about
    if not weight.kinds:
        assert weight.default(cls.config_class) == fields[weight.field].default
        return
    assert weight.kind_field in fields and weight.kind_label
    assert fields[weight.kind_field].default == weight.kinds[0][0]            # the config's default penalty first
    config = small(name).config
    for kind, default in weight.kinds:
        dataclasses.replace(config, **{weight.kind_field: kind}).validate()    # a penalty the config accepts
        assert weight.default(cls.config_class, kind) == default > 0


@pytest.mark.parametrize("name", list_models())
def test_twin_pca_note_and_code_facts(name):
    cls, model = get_model_class(name), small(name)
    if cls.twin is not None:                  # same network: the twin's config says nothing this one cannot
        assert cls.twin != name
        twin_fields = {f.name for f in dataclasses.fields(get_model_class(cls.twin).config_class)}
        assert twin_fields <= {f.name for f in dataclasses.fields(cls.config_class)}
    assert cls.no_pca_baseline is None or cls.no_pca_baseline.strip()
    assert model.code_activation() in CODE_FUNCTIONS
    rate = model.target_rate()
    assert rate is None or 0 < rate < 1
    tied = model.tied_weight()
    assert tied is None or tied.shape[1] == model.config.input_numel           # (units, D)
    x = torch.rand(2, *model.config.input_shape)
    if cls.non_image_output(model.config.to_dict()) is None:
        assert model.reconstruct(x).shape == x.shape


@pytest.mark.parametrize("name", list_models())
def test_train_page_defaults_are_a_code_size_epochs_and_lr_the_app_allows(name):
    from aecore.lab import jobs

    defaults = dict(get_model_class(name).train_page_defaults)
    assert set(defaults) <= {"latent_dim", "epochs", "lr"}
    assert 1 <= defaults.get("latent_dim", 1) <= jobs.MAX_LATENT and 1 <= defaults.get("epochs", 1) <= jobs.MAX_EPOCHS
    assert defaults.get("lr", 1e-3) in jobs.LEARNING_RATES


def test_every_role_is_declared_and_there_is_one_baseline():
    for role in ROLES:
        assert models_with(role), f"no model declares {role!r}"
    assert len(models_with(BASELINE)) == 1          # the Train page's default, the denoise page's contrast


def test_registry_refuses_unknown_roles_and_knows_no_stranger():
    class Telepath(AutoEncoder):
        roles = frozenset({"telepathic"})

    with pytest.raises(ValueError, match="unknown roles"):
        register_model("telepath-test")(Telepath)
    assert "telepath-test" not in list_models()
    with pytest.raises(ValueError, match="unknown role"):
        models_with("telepathic")
    baseline = models_with(BASELINE)[0]
    assert has_role(baseline, BASELINE)
    for stranger in ("no-such-model", [baseline], None):
        assert not has_role(stranger, BASELINE)


# --- nothing above aecore/models names a model ------------------------------------------------------
def model_names_in(source: str) -> list[tuple[int, str]]:
    """(line, text) of every string constant equal to a registered model name, outside recipe calls."""
    tree = ast.parse(source)
    exempt = {id(inner) for node in ast.walk(tree)
              if isinstance(node, ast.Call) and getattr(node.func, "id", None) in RECIPE_CALLS
              for inner in ast.walk(node)}
    names = set(list_models())
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names
            and id(node) not in exempt]


def test_the_scan_finds_a_name_and_spares_recipes():
    name = list_models()[0]
    source = f'_r("{name}-d2", "{name}", "about")\nif entry.model == "{name}":\n    pass\n'
    assert model_names_in(source) == [(2, name)]


def test_no_model_is_picked_by_name_above_the_models_package():
    models = ROOT / "aecore" / "models"
    files = [p for p in sorted((ROOT / "aecore").rglob("*.py")) if models not in p.parents]
    files += sorted((ROOT / "pages").glob("*.py")) + [ROOT / "app.py"]
    found = [f"{p.relative_to(ROOT)}:{line}: {text!r}" for p in files
             for line, text in model_names_in(p.read_text(encoding="utf-8"))]
    assert not found, "pick and describe models by their traits (aecore.models.base), not by name:\n" + "\n".join(found)
