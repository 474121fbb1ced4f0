"""aecore.lab.frontier: the points are what they say (PCA, R_k, shipped models, swept variants), the JSON
round-trips through the manifest, and an unlisted, tampered or malformed file is refused."""

import json
import shutil
from pathlib import Path

import pytest

from aecore.data import load_dataset
from aecore.errors import ModelFileError
from aecore.evaluate import per_image_mse
from aecore.lab import frontier as fr
from aecore.pca import PCA
from aecore.store import load_pretrained, read_manifest, write_manifest


def tiny_splits():
    data = load_dataset("mnist", "test")
    return data.subset(slice(0, 2000)), data.subset(slice(2000, 2500))


def frontier_zoo(tiny_zoo_root: Path, into: Path, *, sweep: bool = True) -> tuple[Path, dict]:
    """A copy of the tiny zoo with its mnist frontier built (variants: 1 epoch) and listed."""
    root = into / "pretrained"
    shutil.copytree(tiny_zoo_root, root)
    train, test = tiny_splits()
    record = fr.build("mnist", train, test, root=root, epochs=1, device="cpu", sweep=sweep)
    fr.write(record, root)
    return root, record


@pytest.fixture(scope="module")
def built(tiny_zoo_root, tmp_path_factory):
    return frontier_zoo(tiny_zoo_root, tmp_path_factory.mktemp("frontier"))


def series(record: dict, kind: str) -> list[dict]:
    return [s for s in record["series"] if s["kind"] == kind]


def test_pca_points_are_pca_with_k_components(built):
    _, record = built
    train, test = tiny_splits()
    pca = series(record, "pca")[0]
    assert [p["l0"] for p in pca["points"]] == [float(k) for k in fr.PCA_KS]
    x = test.as_float()
    model = PCA.fit(train.as_float(), 16)
    point = next(p for p in pca["points"] if p["l0"] == 16)
    assert point["mse"] == pytest.approx(float(per_image_mse(model.reconstruct(x), x).mean()), rel=1e-4)
    assert all(a["mse"] >= b["mse"] - 1e-9 for a, b in zip(pca["points"], pca["points"][1:]))


def test_ranked_points_are_r_k_and_count_only_active_units(built):
    root, record = built
    (ranked,) = series(record, "ranked")
    assert ranked["ref"] == "mnist/rank-ordered-ae" and ranked["weights_sha256"]
    model = load_pretrained("mnist/rank-ordered-ae", root=root, device="cpu").model
    _, test = tiny_splits()
    x = test.as_float()
    h = model.encode(x)
    last = ranked["points"][-1]
    assert last["label"] == "top 16 units"
    assert last["mse"] == pytest.approx(float(per_image_mse(model.reconstruct(x), x).mean()), rel=1e-4)
    assert last["l0"] == pytest.approx(float((h > 0).sum(1).float().mean()))
    four = next(p for p in ranked["points"] if p["label"] == "top 4 units")
    assert four["l0"] == pytest.approx(float((h > 0).sum(1).clamp(max=4).float().mean())) and four["l0"] <= 4
    assert four["mse"] == pytest.approx(float(per_image_mse(model.anytime_reconstruction(x, 4), x).mean()), rel=1e-4)


def test_shipped_sparse_models_and_their_sweep(built):
    root, record = built
    models = {s["name"]: s for s in series(record, "model")}
    assert set(models) == {"sparse-ae, penalty l1", "sparse-ae, penalty kl"}
    kl = models["sparse-ae, penalty kl"]["points"]
    assert len(kl) == 1 and kl[0]["label"] == "target mean activation p = 0.05 (shipped, 2 epochs)"   # not swept
    l1 = models["sparse-ae, penalty l1"]["points"]
    assert [p["l0"] for p in l1] == sorted(p["l0"] for p in l1)
    shipped = [p for p in l1 if p.get("ref")]
    variants = [p for p in l1 if not p.get("ref")]
    assert len(shipped) == 1 and shipped[0]["label"] == "weight = 0.1 (shipped, 2 epochs)"
    assert sorted(p["label"] for p in variants) == [f"weight = {w}, 1 epochs" for w in ("0.03", "0.1", "0.3", "1")]
    assert all("1 epochs" in p["how"] and p["base_ref"] == "mnist/sparse-ae-l1" for p in variants)
    model = load_pretrained("mnist/sparse-ae-l1", root=root, device="cpu").model
    _, test = tiny_splits()
    x = test.as_float()
    h = model.encode(x)
    assert shipped[0]["l0"] == pytest.approx(float((h > 0).sum(1).float().mean()))
    assert shipped[0]["mse"] == pytest.approx(float(per_image_mse(model.reconstruct(x), x).mean()), rel=1e-5)
    stronger = next(p for p in variants if p["label"].startswith("weight = 1,"))
    weaker = next(p for p in variants if p["label"].startswith("weight = 0.03,"))
    assert stronger["l0"] < weaker["l0"]                        # a larger L1 weight leaves fewer units on


def test_the_json_round_trips_through_the_manifest(built):
    root, record = built
    assert "mnist/frontier.json" in read_manifest(root)
    front = fr.read_frontier("mnist", root)
    assert front.dataset == "mnist" and front.measure == record["measure"]
    assert [s.name for s in front.series] == [s["name"] for s in record["series"]]
    for got, want in zip(front.series, record["series"]):
        assert [(p.l0, p.mse, p.label) for p in got.points] == [(p["l0"], p["mse"], p["label"]) for p in want["points"]]
        assert not any(p.stale for p in got.points)
    assert front.refs == {"mnist/rank-ordered-ae", "mnist/sparse-ae-l1", "mnist/sparse-ae-kl"}
    fig = fr.frontier_figure(front, "mnist/sparse-ae-l1", {"l0": 3.0, "mse": 0.01})
    shipped = next(t for t in fig.data if t.name == "sparse-ae, penalty l1: shipped")
    sweep = next(t for t in fig.data if t.name == "sparse-ae, penalty l1: sweep")
    assert list(shipped.marker.size) == [16] and set(sweep.marker.size) == {9}      # the selected point alone is large
    assert set(sweep.marker.symbol) == {"circle-open"} and sweep.mode == "lines+markers"
    assert fig.data[-1].marker.symbol == "star"


@pytest.fixture
def copy(built, tmp_path) -> Path:
    root = tmp_path / "pretrained"
    shutil.copytree(built[0], root)
    return root


def test_an_unlisted_frontier_is_refused(copy):
    file = copy / "mnist" / fr.FRONTIER
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["files"]["mnist/frontier.json"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFileError, match="not listed in the manifest"):
        fr.read_frontier("mnist", copy)
    file.unlink()
    assert fr.read_frontier("mnist", copy) is None              # none at all: nothing to show, nothing wrong


def test_a_tampered_frontier_is_refused(copy):
    file = copy / "mnist" / fr.FRONTIER
    record = json.loads(file.read_text())
    record["series"][0]["points"][0]["mse"] = 0.0                # PCA with one component, perfect
    file.write_text(json.dumps(record))
    with pytest.raises(ModelFileError, match="SHA-256 does not match"):
        fr.read_frontier("mnist", copy)


@pytest.mark.parametrize("change, message", [
    (lambda r: r.update(format="other"), "not an aecore frontier"),
    (lambda r: r["series"][0]["points"][0].update(mse=float("nan")), "finite number"),
    (lambda r: r["series"][0]["points"][0].update(l0=-1), "finite number"),
    (lambda r: r["series"][0].update(kind="<script>"), "kind pca, ranked or model"),
    (lambda r: r["series"][0].update(points=[]), "1 to"),
    (lambda r: r["series"][0]["points"][0].update(label="x" * 5000), "at most 1000 characters"),
    (lambda r: r.update(dataset="fashion-mnist"), "not 'mnist'"),
])
def test_a_malformed_frontier_is_refused_even_when_listed(copy, change, message):
    file = copy / "mnist" / fr.FRONTIER
    record = json.loads(file.read_text())
    change(record)
    file.write_text(json.dumps(record))                         # json.dumps writes NaN as the bare token NaN
    write_manifest(copy)
    with pytest.raises(ModelFileError, match=message):
        fr.read_frontier("mnist", copy)


def test_retrained_models_make_their_points_stale(copy):
    weights = copy / "mnist" / "sparse-ae-l1" / "model.safetensors"
    weights.write_bytes(weights.read_bytes() + b" ")             # as if retrained (the manifest then lists it)
    write_manifest(copy)
    front = fr.read_frontier("mnist", copy)
    stale = {(s.name, p.label) for s in front.series for p in s.points if p.stale}
    assert stale == {("sparse-ae, penalty l1", "weight = 0.1 (shipped, 2 epochs)")}


def test_no_frontier_for_a_folder_dataset_or_garbage(copy):
    assert fr.read_frontier("folder:/etc", copy) is None
    assert fr.read_frontier("../mnist", copy) is None
    assert fr.read_frontier("fashion-mnist", copy) is None


def test_model_point_refuses_a_code_the_reconstruction_bypasses(tiny_zoo_root):
    from aecore.errors import ConfigError

    model = load_pretrained("mnist/unet-denoise", root=tiny_zoo_root, device="cpu").model
    _, test = tiny_splits()
    with pytest.raises(ConfigError, match="skip connections"):
        fr.model_point(model, test)
    model = load_pretrained("mnist/ae-d8", root=tiny_zoo_root, device="cpu").model
    point = fr.model_point(model, test)
    assert point["l0"] == pytest.approx(8.0) and point["threshold"] == 0.0    # a dense code uses every unit
    x = test.as_float()
    assert point["mse"] == pytest.approx(float(per_image_mse(model.reconstruct(x), x).mean()), rel=1e-5)


def test_a_vary_option_sweeps_a_setting_no_trait_declares(tiny_zoo_root):
    train, test = tiny_splits()
    record = fr.build("mnist", train, test, root=tiny_zoo_root, epochs=1, device="cpu",
                      vary={"sparse-ae-kl": ("target_rate", [0.02, 0.1])})
    kl = next(s for s in record["series"] if s["name"] == "sparse-ae, penalty kl")["points"]
    assert sorted(p["label"] for p in kl if not p.get("ref")) == ["target_rate = 0.02, 1 epochs",
                                                                   "target_rate = 0.1, 1 epochs"]


@pytest.mark.parametrize("args, message", [
    (["--vary", "nope:k=1"], "no such pretrained model"),
    (["--vary", "sparse-ae-l1"], "expected ID:FIELD=V1,V2"),
    (["--epochs", "0"], "--epochs must be at least 1"),
    ([], "only the bundled test split was found"),              # offline: no full training split
])
def test_the_frontier_command_refuses_what_it_cannot_do(tiny_zoo, args, message, capsys):
    from aecore.cli import main

    assert main(["zoo", "frontier", "--dataset", "mnist", *args]) == 2
    assert message in capsys.readouterr().err
