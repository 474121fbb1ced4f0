import json
import os
import pickle
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file, save_file

from aecore.errors import ModelFileError
from aecore.models import build_model
from aecore.store import (CONFIG, WEIGHTS, list_pretrained, list_user_models, load_model, load_pretrained, read_manifest, resolve,
                          save_model, write_manifest)

SHAPE = (1, 8, 8)


def tiny():
    return build_model("ae", {"input_shape": list(SHAPE), "hidden": [16], "latent_dim": 3})


@pytest.fixture
def saved(tmp_path):
    model = tiny()
    path = save_model(model, tmp_path / "m", dataset="digits", recipe={"epochs": 1}, metrics={"mse": 0.1})
    return model, path


def test_round_trip_gives_identical_outputs(saved):
    model, path = saved
    loaded = load_model(path, device="cpu")
    x = torch.rand(5, *SHAPE)
    assert torch.equal(model.reconstruct(x), loaded.model.reconstruct(x))
    assert loaded.name == "ae" and loaded.info["dataset"] == "digits" and loaded.metrics == {"mse": 0.1}
    assert loaded.info["config"]["latent_dim"] == 3


def test_half_precision_storage_loads_as_float32(tmp_path):
    model = tiny()
    loaded = load_model(save_model(model, tmp_path / "h", half=True))
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())
    assert load_file(str(tmp_path / "h" / WEIGHTS))["encoder.0.weight"].dtype == torch.float16
    x = torch.rand(4, *SHAPE)
    assert torch.allclose(model.reconstruct(x), loaded.model.reconstruct(x), atol=1e-2)


def test_overwriting_keeps_no_leftovers(saved, tmp_path):
    model, path = saved
    save_model(tiny(), path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    assert sorted(p.name for p in path.iterdir()) == sorted([WEIGHTS, CONFIG, "metrics.json"])


def _edit_config(path, change):
    info = json.loads((path / CONFIG).read_text())
    change(info)
    (path / CONFIG).write_text(json.dumps(info))


@pytest.mark.parametrize("change, message", [
    (lambda i: i.update(model="no-such-model"), "unknown model 'no-such-model'"),
    (lambda i: i["config"].update(latent_dim=0), "latent_dim = 0 is out of range"),
    (lambda i: i["config"].update(latent_dim=10**9), "latent_dim = 1000000000 is out of range"),
    (lambda i: i["config"].update(latent_dim="32"), "expected an integer"),
    (lambda i: i["config"].update(bogus=1), "unknown field(s) bogus"),
    (lambda i: i.update(surprise=True), "unknown field(s) surprise"),
    (lambda i: i.pop("config"), "missing field 'config'"),
])
def test_bad_config_is_refused_with_its_reason(saved, change, message):
    _, path = saved
    _edit_config(path, change)
    with pytest.raises(ModelFileError, match=__import__("re").escape(message)):
        load_model(path)


def test_invalid_json_config(saved):
    _, path = saved
    (path / CONFIG).write_text("{not json")
    with pytest.raises(ModelFileError, match="not valid JSON"):
        load_model(path)


def test_truncated_weights_are_refused(saved):
    _, path = saved
    data = (path / WEIGHTS).read_bytes()
    (path / WEIGHTS).write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="model.safetensors"):
        load_model(path)


def _rewrite_weights(path, change):
    state = load_file(str(path / WEIGHTS))
    change(state)
    save_file(state, str(path / WEIGHTS))
    _edit_config(path, lambda i: i.pop("weights_sha256"))  # as if written by hand, without the sum


@pytest.mark.parametrize("change, message", [
    (lambda s: s.update({"encoder.0.weight": torch.zeros(5, 5)}), "has shape [5, 5]"),
    (lambda s: s.update({"encoder.0.weight": torch.zeros(16, 64, dtype=torch.int32)}), "dtype torch.int32"),
    (lambda s: s["encoder.0.weight"].__setitem__((0, 0), float("nan")), "NaN or Inf"),
    (lambda s: s.pop("encoder.0.bias"), "missing encoder.0.bias"),
    (lambda s: s.update({"extra": torch.zeros(1)}), "unexpected extra"),
])
def test_bad_weights_are_refused(saved, change, message):
    _, path = saved
    _rewrite_weights(path, change)
    with pytest.raises(ModelFileError, match=__import__("re").escape(message)):
        load_model(path)


def test_weights_not_matching_config_sum_are_refused(saved):
    _, path = saved
    state = load_file(str(path / WEIGHTS))
    state["encoder.0.bias"] += 1
    save_file(state, str(path / WEIGHTS))
    with pytest.raises(ModelFileError, match="does not match the weights_sha256"):
        load_model(path)


class Boom:
    def __reduce__(self):
        return (exec, ("raise SystemExit('unpickled!')",))


@pytest.mark.parametrize("name", ["model.pt", "model.pkl", "weights.bin"])
def test_pickles_are_refused_never_unpickled(tmp_path, name):
    file = tmp_path / name
    file.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(ModelFileError, match="never loaded"):
        load_model(file)
    folder = tmp_path / "folder"
    folder.mkdir(exist_ok=True)
    (folder / name).write_bytes(pickle.dumps(Boom()))
    with pytest.raises(ModelFileError, match="pickle files are never loaded"):
        load_model(folder)


def test_torch_save_file_with_innocent_name_is_refused(tmp_path):
    file = tmp_path / "model"
    torch.save({"w": torch.zeros(1)}, file)
    with pytest.raises(ModelFileError, match="looks like a pickle"):
        load_model(file)


def test_pretrained_manifest_check(tmp_path, monkeypatch):
    root = tmp_path / "pretrained"
    save_model(tiny(), root / "digits" / "ae-d3")
    write_manifest(root)
    assert list_pretrained(root) == ["digits/ae-d3"]
    assert set(read_manifest(root)) == {f"digits/ae-d3/{n}" for n in (WEIGHTS, CONFIG, "metrics.json")}
    assert load_pretrained("digits/ae-d3", root=root).name == "ae"
    monkeypatch.setenv("AECORE_PRETRAINED", str(root))
    assert resolve("digits/ae-d3").name == "ae"
    metrics = root / "digits" / "ae-d3" / "metrics.json"
    metrics.write_text('{"mse": 0.0}')  # tampered: better numbers than measured
    with pytest.raises(ModelFileError, match="metrics.json: SHA-256 does not match the manifest"):
        load_pretrained("digits/ae-d3", root=root)
    with pytest.raises(ModelFileError, match="unknown pretrained model 'digits/nope'"):
        load_pretrained("digits/nope", root=root)


def dead_pid() -> int:
    """The id of a process that has ended (as a killed save's process has)."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_interrupted_save_is_recovered(saved, tmp_path):
    """A save killed between its two renames leaves the old folder aside; loading puts it back."""
    _, path = saved
    aside = tmp_path / f".m.old-{dead_pid()}-1"
    path.rename(aside)
    assert load_model(path).name == "ae" and path.is_dir() and not aside.exists()


def killed_between_renames(tmp_path, *, new_complete: bool):
    """What a save of a second model into m, killed between its renames, leaves: m moved aside and the
    finished (or half-written) new folder beside it, named with the dead process's id."""
    first = save_model(tiny(), tmp_path / "m", dataset="digits")
    second = tiny()
    staged = save_model(second, tmp_path / "staging", dataset="digits")
    pid = dead_pid()
    first.rename(tmp_path / f".m.old-{pid}-7")
    new = tmp_path / f".m.{pid}-abc123.new"
    staged.rename(new)
    if not new_complete:
        (new / "metrics.json").unlink()            # killed while writing: the old model comes back
    return first, second


@pytest.mark.parametrize("opener", ["load", "eval", "list"])
def test_a_save_killed_between_its_renames_is_reachable_everywhere(tmp_path, capsys, monkeypatch, opener):
    path, second = killed_between_renames(tmp_path, new_complete=True)
    assert not path.exists()
    if opener == "load":
        loaded = load_model(path)
    elif opener == "eval":
        from aecore.cli import main
        assert main(["eval", str(path), "--dataset", "digits", "--json"]) == 0
        loaded = load_model(path)
    else:
        assert [p.name for p in list_user_models(tmp_path)] == ["m"]
        loaded = load_model(path)
    x = torch.rand(3, *SHAPE)
    assert torch.equal(loaded.model.reconstruct(x), second.reconstruct(x))     # the model being saved
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]                 # nothing left aside


def test_a_half_written_new_folder_gives_the_previous_model_back(tmp_path):
    path, _ = killed_between_renames(tmp_path, new_complete=False)
    assert [p.name for p in list_user_models(tmp_path)] == ["m"] and load_model(path).name == "ae"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_leftovers_of_dead_saves_are_removed_and_live_ones_kept(saved, tmp_path):
    _, path = saved
    pid = dead_pid()
    for name in (f".m.{pid}-x1.new", f".m.old-{pid}-5", f".m.{os.getpid()}-x2.new"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_bytes(bytes(1000))
    old_style = tmp_path / ".m.q9z8.new"                    # no process id (aecore before 2026-12-03)
    old_style.mkdir()
    list_user_models(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["m", f".m.{os.getpid()}-x2.new", ".m.q9z8.new"])
    hour_ago = time.time() - 2 * 3600                       # a leftover an hour old is dead whoever made it
    os.utime(old_style, (hour_ago, hour_ago))
    import aecore.store as store
    real_time = time.time
    try:
        store.time.time = lambda: real_time() + 2 * 3600
        list_user_models(tmp_path)
    finally:
        store.time.time = real_time
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_leftovers_of_another_model_are_not_touched(tmp_path):
    save_model(tiny(), tmp_path / "m.x")
    other = tmp_path / f".m.x.{dead_pid()}-a1.new"
    other.mkdir()
    save_model(tiny(), tmp_path / "m")                     # tidies m's leftovers only
    assert other.exists()


def test_failed_save_never_replaces_a_good_model(saved, monkeypatch):
    model, path = saved
    import aecore.store as store

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(store, "atomic_write_json", crash)
    with pytest.raises(OSError):
        save_model(tiny(), path)
    x = torch.rand(2, *SHAPE)
    assert torch.equal(load_model(path).model.reconstruct(x), model.reconstruct(x))
    assert [p.name for p in path.parent.iterdir()] == ["m"]
