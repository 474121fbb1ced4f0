"""The zoo build path end to end on tiny data, the README table generator, and the shipped zoo."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from aecore import zoo, zoo_table
from aecore.cli import main
from aecore.errors import ConfigError
from aecore.maps import read_maps
from aecore.store import list_pretrained, load_pretrained, read_manifest, sha256_file
from aecore.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def tiny_recipe(**train) -> zoo.Recipe:
    return zoo.Recipe(id="ae-tiny", model="ae", config={"hidden": [32], "latent_dim": 4},
                      train={"seed": 0, "epochs": 2, "batch_size": 64, "lr": 2e-3, **train},
                      about="tiny", datasets=("digits",))


def test_build_one_writes_a_complete_verified_model(tmp_path, capsys):
    metrics = zoo.build_one(tiny_recipe(noise="gaussian:0.3"), "digits", root=tmp_path, map_methods=("pca",))
    from aecore.store import write_manifest
    write_manifest(tmp_path)
    folder = tmp_path / "digits" / "ae-tiny"
    assert {p.name for p in folder.iterdir()} == {"model.safetensors", "config.json", "metrics.json", "maps.npz"}
    assert not (tmp_path / ".build" / "digits" / "ae-tiny").exists()       # checkpoint removed
    manifest = read_manifest(tmp_path)
    assert manifest["digits/ae-tiny/maps.npz"] == sha256_file(folder / "maps.npz")
    config = json.loads((folder / "config.json").read_text())
    assert config["recipe"]["zoo_id"] == "ae-tiny" and config["recipe"]["epochs"] == 2
    assert config["trained_on"].startswith("cpu") and config["weights_dtype"] == "float16"
    assert metrics["psnr_gain"] == pytest.approx(metrics["psnr"] - metrics["noisy_psnr"], abs=1e-5)
    assert metrics["pca_components"] == 4 and metrics["pca_mse"] > 0
    maps = read_maps(folder)
    assert maps["pca"].shape == (metrics["n"], 2) and maps["labels"].shape == (metrics["n"],)
    assert maps["pca"].dtype == np.float32 and np.isfinite(maps["pca"]).all()   # stored as float16, read as float32
    with np.load(folder / "maps.npz", allow_pickle=False) as npz:
        assert npz["pca"].dtype == np.float16
    loaded = load_pretrained("digits/ae-tiny", root=tmp_path)
    assert loaded.metrics["mse"] == metrics["mse"]
    # `aecore eval` on the shipped folder reproduces metrics.json (same seed, the recipe's noise)
    assert main(["eval", str(folder), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    for key in ("mse", "psnr", "noisy_psnr", "psnr_gain"):
        assert again[key] == pytest.approx(metrics[key], abs=1e-6)


def test_build_refuses_unknown_ids(tmp_path):
    with pytest.raises(ConfigError, match="unknown zoo id"):
        zoo.build(only=["no-such-model"], root=tmp_path)


def test_every_recipe_is_a_valid_training_config_and_model():
    from aecore.models import build_model

    for recipe in zoo.RECIPES.values():
        TrainConfig.from_dict(recipe.train, where=recipe.id)
        shape = [3, 7, 7] if recipe.datasets == ("cifar10-patches",) else [1, 28, 28]
        build_model(recipe.model, dict(recipe.config, input_shape=shape))
    ids = zoo.recipe_ids()
    assert len(ids) == len(set(ids)) and "mnist/ae-d32" in ids and "fashion-mnist/vae-d2" in ids


def test_table_renders_from_metrics_and_replaces_between_markers(tmp_path, tiny_zoo):
    table = zoo_table.render(tiny_zoo)
    assert table.count("\n") == len(list_pretrained(tiny_zoo)) + 1
    assert "`mnist/dae-gaussian`" in table and "gaussian:0.5" in table
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{zoo_table.BEGIN}\nold\n{zoo_table.END}\noutro\n")
    zoo_table.write_into(readme, table)
    assert zoo_table.current(readme) == table
    assert readme.read_text().startswith("intro\n") and readme.read_text().endswith("outro\n")
    (tmp_path / "plain.md").write_text("no markers")
    with pytest.raises(ConfigError, match="markers not found"):
        zoo_table.write_into(tmp_path / "plain.md", table)


# --- the zoo that ships in pretrained/ -----------------------------------------------------------
SHIPPED = ROOT / "pretrained"
shipped_ids = list_pretrained(SHIPPED)


@pytest.mark.skipif(not shipped_ids, reason="no pretrained/manifest.json in this checkout")
@pytest.mark.parametrize("model_id", shipped_ids)
def test_shipped_model_loads_and_matches_its_manifest_and_recipe(model_id):
    loaded = load_pretrained(model_id, root=SHIPPED)            # checks every file's SHA-256 first
    dataset, rid = model_id.split("/", 1)
    recipe = zoo.RECIPES[rid]
    assert loaded.info["model"] == recipe.model and loaded.info["dataset"] == dataset
    assert loaded.info["recipe"]["zoo_id"] == rid
    for key, value in recipe.config.items():
        got = loaded.info["config"][key]
        assert (list(got) if isinstance(got, (list, tuple)) else got) == value, key
    assert np.isfinite(loaded.metrics["mse"]) and loaded.metrics["n"] > 0
    maps = read_maps(SHIPPED / model_id)
    assert maps["umap"].shape == (loaded.metrics["n"], 2) and len(maps["labels"]) == loaded.metrics["n"]
    assert "pca" not in maps        # the pages project the codes with PCA themselves: not worth 37 KB a model


@pytest.mark.skipif(not shipped_ids, reason="no pretrained/manifest.json in this checkout")
def test_shipped_zoo_is_within_budget_and_the_readme_table_is_current():
    total = sum(f.stat().st_size for f in SHIPPED.rglob("*") if f.is_file() and ".build" not in f.parts)
    assert total <= 40 * 2**20, f"pretrained/ is {total / 2**20:.1f} MB"
    assert set(read_manifest(SHIPPED)) == {f.relative_to(SHIPPED).as_posix() for f in SHIPPED.rglob("*")
                                           if f.is_file() and f.name != "manifest.json" and ".build" not in f.parts}
    assert zoo_table.current(ROOT / "README.md") == zoo_table.render(SHIPPED)


@pytest.mark.skipif(not shipped_ids, reason="no pretrained/manifest.json in this checkout")
def test_every_recipe_ships_trained_with_its_recorded_recipe():
    """The zoo is what `aecore zoo build` makes: no recipe left unbuilt, none shipped from an older recipe."""
    assert set(zoo.recipe_ids()) == set(shipped_ids)
    for model_id in shipped_ids:
        recorded = json.loads((SHIPPED / model_id / "config.json").read_text(encoding="utf-8"))["recipe"]
        recorded = {k: v for k, v in recorded.items() if k not in ("zoo_id", "val_fraction")}
        recipe = zoo.RECIPES[model_id.split("/", 1)[1]]
        assert recorded == TrainConfig.from_dict(recipe.train, where=recipe.id).to_dict(), model_id


def test_zoo_table_judges_kl_sparsity_by_its_mean_activation():
    """KL sparsity asks for a mean activation p, not zeros: its cell says the mean against p."""
    from aecore.zoo_table import key_figures

    m = {"population_sparsity": 0.336, "mean_activation": 0.0553}
    assert key_figures(m, target_rate=0.05) == "mean activation 0.0553 (target p = 0.05)"
    assert key_figures(m) == "population sparsity 33.6 %"
