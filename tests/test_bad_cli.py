"""A corpus of hostile command lines: each must get ONE line on stderr ("aecore: error: ..."), exit
code 2 and no traceback, whatever the flag, the `--set` value, the file the CLI reads (metrics.json,
config.json, a README, a training checkpoint) or the size of the model asked for.

Each case is `argv` or `make(tmp_path, base) -> argv` (`base` holds a tiny trained checkpoint and a
tiny model folder, built once) and a fragment the error line must contain.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load, save

from aecore.models import build_model, registry
from aecore.store import save_model, write_manifest
from aecore.train import CHECKPOINT_NAME, TrainConfig, Trainer
from aecore.zoo_table import BEGIN, END
from tests.test_bad_inputs import assert_one_line, cli

TINY = ["--set", "hidden=[8]", "--latent-dim", "2"]
TRAIN = ["train", "--model", "ae", "--dataset", "digits", "--quiet"]
DIGITS_SHAPE = [1, 8, 8]
WIDE = "hidden=[" + ",".join(["65536"] * 8) + "]"          # ~60 billion parameters: no machine trains it
AVAILABLE = 16 * 10**9                                      # the memory the corpus pretends to have


# --- what the cases build on ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def base(tmp_path_factory) -> dict[str, Path]:
    """A checkpoint after 1 epoch of the model `TRAIN + TINY` builds, and a saved model folder."""
    from aecore.data import load_dataset

    root = tmp_path_factory.mktemp("base")
    train = load_dataset("digits", "train")
    torch.manual_seed(0)
    model = build_model("ae", {"hidden": [8], "latent_dim": 2, "input_shape": DIGITS_SHAPE})
    Trainer(model, train, config=TrainConfig(epochs=1, batch_size=256), checkpoint_dir=root / "run").fit()
    params = sum(p.numel() for p in model.parameters())
    save_model(model, root / "pretrained" / "digits" / "tiny", dataset="digits", classes=train.classes,
               metrics={"mse": 0.1, "psnr": 10.0, "parameters": params})
    write_manifest(root / "pretrained")
    return {"checkpoint": root / "run" / CHECKPOINT_NAME, "model": root / "pretrained" / "digits" / "tiny",
            "pretrained": root / "pretrained"}


def _read_checkpoint(file: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    data = file.read_bytes()
    size = int.from_bytes(data[:8], "little")
    return load(data), json.loads(data[8:8 + size])["__metadata__"]


def crafted(edit):
    """A run folder whose checkpoint is the base one changed by edit(tensors, metadata); argv resumes it."""
    def make(tmp_path: Path, base: dict[str, Path]) -> list[str]:
        tensors, metadata = _read_checkpoint(base["checkpoint"])
        edit(tensors, metadata)
        run = tmp_path / "run"
        run.mkdir()
        (run / CHECKPOINT_NAME).write_bytes(save(tensors, metadata=metadata))
        return [*TRAIN, *TINY, "--epochs", "2", "--resume", "--out", str(run)]
    return make


def trainer_edit(change):
    def edit(tensors, metadata):
        trainer = json.loads(metadata["trainer"])
        change(trainer)
        metadata["trainer"] = json.dumps(trainer)
    return edit


def groups_edit(change):
    def edit(tensors, metadata):
        groups = json.loads(metadata["optim_groups"])
        change(groups)
        metadata["optim_groups"] = json.dumps(groups)
    return edit


def meta(key, value):
    def edit(tensors, metadata):
        if value is None:
            del metadata[key]
        else:
            metadata[key] = value
    return edit


def rename_param(old: int, new: int):
    def edit(tensors, metadata):
        for key in [k for k in tensors if k.startswith(f"optim/{old}/")]:
            tensors[key.replace(f"optim/{old}/", f"optim/{new}/")] = tensors.pop(key)
    return edit


def truncated_checkpoint(tmp_path: Path, base) -> list[str]:
    run = tmp_path / "run"
    run.mkdir()
    data = base["checkpoint"].read_bytes()
    (run / CHECKPOINT_NAME).write_bytes(data[: len(data) // 2])
    return [*TRAIN, *TINY, "--epochs", "2", "--resume", "--out", str(run)]


def model_folder(file: str, text: str, *, command=("eval",)):
    """A copy of the tiny model folder with `file` replaced by `text`."""
    def make(tmp_path: Path, base) -> list[str]:
        folder = tmp_path / "model"
        shutil.copytree(base["model"], folder)
        (folder / file).write_text(text)
        return [*command, str(folder)]
    return make


def zoo_root(metrics_text: str):
    """A pretrained/ folder (manifest and all) whose one model's metrics.json is `metrics_text`."""
    def make(tmp_path: Path, base) -> list[str]:
        root = tmp_path / "pretrained"
        shutil.copytree(base["pretrained"], root)
        (root / "digits" / "tiny" / "metrics.json").write_text(metrics_text)
        write_manifest(root)
        return ["zoo", "table", "--root", str(root)]
    return make


def readme(content: bytes):
    def make(tmp_path: Path, base) -> list[str]:
        file = tmp_path / "README.md"
        file.write_bytes(content)
        return ["zoo", "table", "--write", str(file), "--root", str(base["pretrained"])]
    return make


def in_tmp(build):
    """argv from a function of tmp_path alone."""
    return lambda tmp_path, base: build(tmp_path)


def a_file(tmp_path: Path) -> Path:
    file = tmp_path / "plain.txt"
    file.write_text("not a folder")
    return file


def foreign_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "documents"
    folder.mkdir()
    (folder / "thesis.tex").write_text("precious")
    return folder


def image_folder_empty(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    (folder / "cats").mkdir(parents=True)
    return folder


# --- the corpus ------------------------------------------------------------------------------------
DIGITS_5000 = "9" * 5000
CASES = [
    # --set: syntax, names, and values Python cannot hold
    pytest.param([*TRAIN, "--out", "x", "--set", "latent_dim=" + DIGITS_5000], "4300 digits", id="set-int-5000-digits"),
    pytest.param([*TRAIN, "--out", "x", "--set", "hidden=[" + DIGITS_5000 + "]"], "4300 digits",
                 id="set-list-int-5000-digits"),
    pytest.param([*TRAIN, "--out", "x", "--set", "hidden=" + "[" * 100_000 + "]" * 100_000],
                 "200,000 characters long", id="set-nested-100000-deep"),
    pytest.param([*TRAIN, "--out", "x", "--set", "hidden=" + "[" * 4000 + "]" * 4000], "nested too deeply",
                 id="set-nested-4000-deep"),
    pytest.param([*TRAIN, "--out", "x", "--set", "hidden=" + "x" * 10_000_000], "10,000,000 characters long",
                 id="set-10-MB-string"),
    pytest.param([*TRAIN, "--out", "x", "--set", "activation=" + "x" * 9000], "is not one of",
                 id="set-long-string-short-message"),
    pytest.param([*TRAIN, "--out", "x", "--set", "hidden"], "expected key=value", id="set-no-equals"),
    pytest.param([*TRAIN, "--out", "x", "--set", "=5"], "expected key=value", id="set-empty-key"),
    pytest.param([*TRAIN, "--out", "x", "--set", "a.b=1"], "not a config field name", id="set-dotted-key"),
    pytest.param([*TRAIN, "--out", "x", "--set", "x" * 100_000 + "=1"], "not a config field name",
                 id="set-100000-char-key"),
    pytest.param([*TRAIN, "--out", "x", "--set", "bogus=1"], "unknown field(s) bogus", id="set-unknown-field"),
    pytest.param([*TRAIN, "--out", "x", "--set", "hidden=abc"], "hidden: expected a list", id="set-hidden-a-word"),
    pytest.param([*TRAIN, "--out", "x", "--set", "hidden=[1.5]"], "expected an integer", id="set-hidden-float"),
    pytest.param([*TRAIN, "--out", "x", "--set", "hidden=[NaN]"], "expected an integer, got nan",
                 id="set-hidden-nan"),
    pytest.param([*TRAIN, "--out", "x", "--set", "latent_dim=Infinity"], "expected an integer, got inf",
                 id="set-latent-infinity"),
    pytest.param([*TRAIN, "--out", "x", "--set", "latent_dim=true"], "expected an integer, got True",
                 id="set-latent-bool"),
    pytest.param([*TRAIN, "--out", "x", "--set", "hidden=[" + ",".join(["8"] * 9) + "]"],
                 "number of hidden layers", id="set-hidden-9-layers"),
    pytest.param([*TRAIN, "--out", "x", "--set", "hidden=[65537]"], "hidden entries = 65537 is out of range",
                 id="set-hidden-too-wide"),
    pytest.param([*TRAIN, "--out", "x", "--set", "output=\u2603"], "is not one of", id="set-unicode-value"),
    # models too large for the memory (estimated on the meta device, nothing allocated)
    pytest.param([*TRAIN, "--out", "x", "--set", "hidden=[65536,65536]"], "needs about 138.2 GB to train",
                 id="memory-mlp-65536x2"),
    pytest.param([*TRAIN, "--out", "x", "--set", WIDE], "60,143,173,728 parameters", id="memory-mlp-65536x8"),
    pytest.param(["train", "--model", "conv-ae", "--dataset", "digits", "--quiet", "--out", "x",
                  "--set", "channels=[1024]", "--latent-dim", "65536"], "16.0 GB available",
                 id="memory-conv-huge-code"),
    # numeric flags: zero, negative, huge, NaN, infinite, not numbers
    pytest.param([*TRAIN, "--out", "x", "--epochs", "-3"], "epochs = -3 is out of range", id="epochs-negative"),
    pytest.param([*TRAIN, "--out", "x", "--epochs", "1000000"], "epochs = 1000000 is out of range", id="epochs-huge"),
    pytest.param([*TRAIN, "--out", "x", "--epochs", DIGITS_5000], "expected an integer, got", id="epochs-5000-digits"),
    pytest.param([*TRAIN, "--out", "x", "--epochs", "4" + "0" * 3000], "digits) is out of range",
                 id="epochs-3001-digits"),
    pytest.param([*TRAIN, "--out", "x", "--epochs", "1.5"], "expected an integer, got '1.5'", id="epochs-float"),
    pytest.param([*TRAIN, "--out", "x", "--batch-size", "0"], "batch_size = 0 is out of range", id="batch-size-0"),
    pytest.param([*TRAIN, "--out", "x", "--batch-size", str(10**12)], "batch_size = 1000000000000 is out of range",
                 id="batch-size-huge"),
    pytest.param([*TRAIN, "--out", "x", "--lr", "nan"], "lr: expected a finite number, got nan", id="lr-nan"),
    pytest.param([*TRAIN, "--out", "x", "--lr=-inf"], "lr: expected a finite number, got -inf", id="lr-minus-inf"),
    pytest.param([*TRAIN, "--out", "x", "--lr", "1e300"], "lr = 1e+300 is out of range", id="lr-huge"),
    pytest.param([*TRAIN, "--out", "x", "--lr", "fast"], "argument --lr: expected a number, got 'fast'",
                 id="lr-a-word"),
    pytest.param([*TRAIN, "--out", "x", "--val-fraction", "1"], "--val-fraction must be in [0, 1)",
                 id="val-fraction-1"),
    pytest.param([*TRAIN, "--out", "x", "--val-fraction", "nan"], "--val-fraction must be in [0, 1)",
                 id="val-fraction-nan"),
    pytest.param([*TRAIN, "--out", "x", "--val-fraction", "-0.5"], "--val-fraction must be in [0, 1)",
                 id="val-fraction-negative"),
    pytest.param([*TRAIN, "--out", "x", "--labels", "0"], "labels = 0 is out of range", id="labels-0"),
    pytest.param([*TRAIN, "--out", "x", "--labels", "-7"], "labels = -7 is out of range", id="labels-negative"),
    pytest.param([*TRAIN, "--out", "x", "--stage-epochs", "-1"], "stage_epochs = -1 is out of range",
                 id="stage-epochs-negative"),
    pytest.param([*TRAIN, "--out", "x", "--stage-epochs", "2"], "trains in one stage", id="stage-epochs-one-stage"),
    pytest.param([*TRAIN, "--out", "x", "--seed", "-1"], "seed = -1 is out of range", id="seed-negative"),
    pytest.param([*TRAIN, "--out", "x", "--noise", "gaussian"], "needs a level", id="noise-no-level"),
    pytest.param([*TRAIN, "--out", "x", "--noise", "gaussian:nan"], "noise 'gaussian:nan'", id="noise-nan"),
    pytest.param([*TRAIN, "--out", "x", "--noise", "gaussian:0.5:extra"], "noise 'gaussian:0.5:extra'",
                 id="noise-extra-part"),
    pytest.param([*TRAIN, "--out", "x", "--noise", "\u30ac\u30a6\u30b9:0.5"], "unknown noise", id="noise-unicode"),
    pytest.param([*TRAIN, "--out", "x", "--noise", "\x00"], "NUL character", id="noise-nul"),
    # devices, datasets and paths
    pytest.param([*TRAIN, "--out", "x", "--device", "tpu"], "unknown device 'tpu'", id="device-unknown"),
    pytest.param([*TRAIN, "--out", "x", "--device", "cuda:99"], "cuda:99", id="device-cuda-99"),
    pytest.param([*TRAIN, "--out", "x", "--device", "cpu:zero"], "unknown device", id="device-garbage-index"),
    pytest.param(in_tmp(lambda t: [*TRAIN, "--out", str(t / "x"), "--data-dir", str(a_file(t))]),
                 "is a file; it must be a folder", id="data-dir-a-file"),
    pytest.param(["train", "--model", "ae", "--dataset", "folder:/no/such/folder", "--out", "x"], "does not exist",
                 id="dataset-missing-folder"),
    pytest.param(in_tmp(lambda t: ["train", "--model", "ae", "--dataset", f"folder:{a_file(t)}", "--out", "x"]),
                 "is not a folder", id="dataset-folder-a-file"),
    pytest.param(in_tmp(lambda t: ["train", "--model", "ae", "--dataset", f"folder:{image_folder_empty(t)}",
                                   "--out", "x"]), "no image files", id="dataset-folder-without-images"),
    pytest.param(["train", "--model", "ae", "--dataset", "mn\u00efst", "--out", "x"], "unknown dataset",
                 id="dataset-unicode"),
    pytest.param(["train", "--model", "\u00e6", "--dataset", "digits", "--out", "x"], "unknown model",
                 id="model-unicode"),
    pytest.param(in_tmp(lambda t: [*TRAIN, "--out", str(a_file(t) / "run")]), "is a file, so no folder",
                 id="out-inside-a-file"),
    pytest.param(in_tmp(lambda t: [*TRAIN, "--out", str(a_file(t))]), "exists and is not a folder",
                 id="out-is-a-file"),
    pytest.param(in_tmp(lambda t: [*TRAIN, "--out", str(foreign_folder(t))]), "is not an aecore model folder",
                 id="out-foreign-folder"),
    pytest.param(in_tmp(lambda t: [*TRAIN, *TINY, "--epochs", "1", "--out", str(t / ("n" * 300))]),
                 "File name too long", id="out-name-too-long"),
    pytest.param([*TRAIN, "--out", "run\x00s"], "argument 8 contains a NUL character", id="out-nul"),
    pytest.param(["train", "--model", "ae", "--dataset", "digits", "--out", "x", "--precision", "fp8"],
                 "invalid choice: 'fp8'", id="precision-unknown"),
    pytest.param(["list", "a\nb"], "unrecognized arguments: a b", id="newline-in-argument"),
    pytest.param([], "the following arguments are required", id="no-command"),
    # crafted checkpoints on --resume
    pytest.param(crafted(meta("trainer", "[1, 2]")), "metadata 'trainer' must be a JSON object",
                 id="ckpt-trainer-a-list"),
    pytest.param(crafted(meta("trainer", None)), "its metadata lacks 'trainer'", id="ckpt-trainer-missing"),
    pytest.param(crafted(meta("trainer", "{not json")), "metadata 'trainer' is not readable JSON",
                 id="ckpt-trainer-bad-json"),
    pytest.param(crafted(meta("trainer", '{"step": ' + DIGITS_5000 + "}")), "4300 digits",
                 id="ckpt-trainer-5000-digit-int"),
    pytest.param(crafted(meta("trainer", "[" * 100_000 + "]" * 100_000)), "is not readable JSON",
                 id="ckpt-trainer-nested-100000"),
    pytest.param(crafted(meta("aecore_checkpoint", None)), "not an aecore training checkpoint",
                 id="ckpt-no-mark"),
    pytest.param(crafted(trainer_edit(lambda t: t.pop("epoch"))), "metadata 'trainer' lacks 'epoch'",
                 id="ckpt-trainer-no-epoch"),
    pytest.param(crafted(trainer_edit(lambda t: t.update(epoch="1"))), "field 'epoch' must be",
                 id="ckpt-epoch-a-string"),
    pytest.param(crafted(trainer_edit(lambda t: t.update(step=-5))), "field 'step' must be a count",
                 id="ckpt-step-negative"),
    pytest.param(crafted(trainer_edit(lambda t: t.update(images_seen=True))), "field 'images_seen' must be",
                 id="ckpt-images-seen-bool"),
    pytest.param(crafted(trainer_edit(lambda t: t.update(stage_index=7))), "stage_index 7",
                 id="ckpt-stage-index-out-of-range"),
    pytest.param(crafted(trainer_edit(lambda t: t.update(history=[1, 2]))), "history[0] is not an epoch record",
                 id="ckpt-history-garbage"),
    pytest.param(crafted(trainer_edit(lambda t: t.update(model="vae"))), "was made for another model",
                 id="ckpt-other-model"),
    pytest.param(crafted(meta("optim_groups", "[]")), "non-empty list of parameter groups", id="ckpt-groups-empty"),
    pytest.param(crafted(groups_edit(lambda g: g[0].update(params=[0, 1, 2]))),
                 "optimiser state does not fit this model", id="ckpt-groups-too-few-params"),
    pytest.param(crafted(groups_edit(lambda g: g[0].update(params=[0] * 8))), "distinct parameter ids",
                 id="ckpt-groups-duplicate-ids"),
    pytest.param(crafted(groups_edit(lambda g: g[0].update(lr="fast"))), "optimiser setting 'lr'",
                 id="ckpt-groups-lr-a-string"),
    pytest.param(crafted(groups_edit(lambda g: g[0].update(betas=[2, 0.5]))), "optimiser setting 'betas'",
                 id="ckpt-groups-bad-betas"),
    pytest.param(crafted(groups_edit(lambda g: g[0].update(frobnicate=1))), "unknown setting(s) 'frobnicate'",
                 id="ckpt-groups-unknown-setting"),
    pytest.param(crafted(meta("optim_scalars", '"x"')), "'optim_scalars' must map parameter ids",
                 id="ckpt-scalars-garbage"),
    pytest.param(crafted(rename_param(7, 99)), "it names parameter 99", id="ckpt-unknown-parameter-id"),
    pytest.param(crafted(lambda t, m: t.update({"optim/0/exp_avg": torch.zeros(3, 3)})),
                 "optimiser state does not fit this model (exp_avg of parameter 0 is [3, 3]", id="ckpt-optim-shape"),
    pytest.param(crafted(lambda t, m: t.pop("optim/0/exp_avg_sq")), "expected ['exp_avg', 'exp_avg_sq', 'step']",
                 id="ckpt-optim-missing-moment"),
    pytest.param(crafted(lambda t, m: t["optim/0/exp_avg_sq"].fill_(-1)), "NaN, infinite or negative",
                 id="ckpt-optim-negative-moment"),
    pytest.param(crafted(lambda t, m: t.update({"optim/0/step": torch.tensor(float("nan"))})), "not a count",
                 id="ckpt-optim-step-nan"),
    pytest.param(crafted(lambda t, m: t.update({"optim/x/exp_avg": torch.zeros(1)})), "unexpected tensor",
                 id="ckpt-optim-id-not-a-number"),
    pytest.param(crafted(lambda t, m: t.update({"model/encoder.0.weight": torch.zeros(16, 64)})),
                 "does not fit this model's configuration (1 tensor(s) differ, e.g. encoder.0.weight: [16, 64]",
                 id="ckpt-model-shape-mismatch"),
    pytest.param(crafted(lambda t, m: t.pop("model/decoder.0.bias")), "1 missing, e.g. decoder.0.bias",
                 id="ckpt-model-tensor-missing"),
    pytest.param(crafted(lambda t, m: t["model/encoder.0.bias"].fill_(float("nan"))), "holds NaN or infinite",
                 id="ckpt-model-nan"),
    pytest.param(truncated_checkpoint, "is unreadable", id="ckpt-truncated"),
    # files the CLI reads: eval's model folder, the zoo table's metrics, the README it rewrites
    pytest.param(model_folder("metrics.json", '{"mse": ' + DIGITS_5000 + "}"), "4300 digits",
                 id="eval-metrics-5000-digits"),
    pytest.param(model_folder("config.json", "[" * 100_000 + "]" * 100_000), "nested too deeply",
                 id="eval-config-nested"),
    pytest.param(lambda t, b: ["eval", str(b["model"]), "--data-dir", str(a_file(t))], "is a file",
                 id="eval-data-dir-a-file"),
    pytest.param(lambda t, b: ["eval", str(b["model"]), "--device", "nonsense"], "unknown device",
                 id="eval-device-nonsense"),
    pytest.param(lambda t, b: ["eval", str(b["model"]), "--noise", "blur:1"], "unknown noise 'blur'",
                 id="eval-noise-unknown"),
    pytest.param(zoo_root('{"parameters": ' + DIGITS_5000 + "}"), "4300 digits", id="zoo-table-metrics-5000-digits"),
    pytest.param(zoo_root("[" * 100_000 + "]" * 100_000), "nested too deeply", id="zoo-table-metrics-nested"),
    pytest.param(zoo_root('{"mse": 0.1}'), "field 'parameters' missing", id="zoo-table-metrics-no-parameters"),
    pytest.param(zoo_root('{"parameters": "many"}'), "a field of the wrong type", id="zoo-table-metrics-wrong-type"),
    pytest.param(zoo_root("[1, 2]"), "expected a JSON object", id="zoo-table-metrics-a-list"),
    pytest.param(in_tmp(lambda t: ["zoo", "table", "--root", str(a_file(t))]), "is not a folder",
                 id="zoo-table-root-a-file"),
    pytest.param(readme(b"# no markers here\n"), "markers not found", id="zoo-table-write-no-markers"),
    pytest.param(readme(f"{END}\n{BEGIN}\n".encode()), "markers in the wrong order",
                 id="zoo-table-write-markers-reversed"),
    pytest.param(readme(b"\xff\xfe\x00binary"), "not a UTF-8 text file", id="zoo-table-write-binary"),
    pytest.param(lambda t, b: ["zoo", "table", "--write", str(t / "missing.md"), "--root", str(b["pretrained"])],
                 "No such file", id="zoo-table-write-missing-file"),
]


@pytest.mark.parametrize("make, fragment", CASES)
def test_hostile_command_line_gets_one_line(make, fragment, tmp_path, base, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(registry, "available_memory_bytes", lambda device=None: AVAILABLE)   # the same on any machine
    argv = make(tmp_path, base) if callable(make) else make
    code, err = cli(*argv, capsys=capsys)
    assert_one_line(code, err, fragment)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("aecore: error: "), err[:3000]
    assert len(lines[0]) <= 2100, lines[0][:300]


def test_the_corpus_is_large():
    assert len(CASES) >= 45


def test_a_valid_checkpoint_still_resumes(tmp_path, base, capsys):
    """The checks refuse only what is wrong: the base checkpoint, unedited, resumes and saves."""
    argv = crafted(lambda tensors, metadata: None)(tmp_path, base)
    code, err = cli(*argv, capsys=capsys)
    assert code == 0, err
    assert (tmp_path / "run" / "model.safetensors").is_file()


def test_memory_estimate_counts_without_allocating():
    estimate = registry.estimate_memory("ae", {"hidden": [65536] * 8, "input_shape": DIGITS_SHAPE})
    assert estimate.parameters == 60_143_173_728
    assert estimate.training_bytes(128) > 4 * estimate.parameters * 4
    small = registry.model_memory_bytes("ae", {"hidden": [8], "latent_dim": 2, "input_shape": DIGITS_SHAPE},
                                        batch_size=128)
    assert 0 < small < 10**7
    assert registry.available_memory_bytes() > 0
    with pytest.raises(Exception, match="for its weights alone"):
        build_model("ae", {"hidden": [65536] * 8})      # the builder refuses too, before allocating


def _worst(tmp_path: Path) -> list[list[str]]:
    readme_file = tmp_path / "README.md"
    readme_file.write_text("no markers\n")
    return [
        [*TRAIN, "--out", str(tmp_path / "a"), "--set", "hidden=" + "[" * 60_000 + "]" * 60_000],
        [*TRAIN, "--out", str(tmp_path / "b"), "--set", "latent_dim=" + DIGITS_5000],
        [*TRAIN, "--out", str(tmp_path / "c"), "--set", WIDE],
        ["zoo", "table", "--write", str(readme_file), "--root", str(tmp_path)],
    ]


@pytest.mark.parametrize("index", range(4), ids=["nested-set", "5000-digit-set", "60-billion-parameters",
                                                  "readme-without-markers"])
def test_worst_cases_through_a_real_process(tmp_path, index):
    argv = _worst(tmp_path)[index]
    proc = subprocess.run([sys.executable, "-m", "aecore", *argv], capture_output=True, text=True, timeout=180,
                          cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("aecore: error: "), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr


def test_a_failure_mid_epoch_starts_its_own_line(tmp_path, capsys, monkeypatch):
    """With the progress bar on, an error raised during training is not glued to the bar's line."""
    from aecore.errors import TrainingError

    def fail(self):
        raise TrainingError("loss became nan at step 11; try a smaller learning rate")

    monkeypatch.setattr(Trainer, "_validate", fail)
    code, err = cli("train", "--model", "ae", "--dataset", "digits", *TINY, "--epochs", "1",
                    "--out", str(tmp_path / "run"), capsys=capsys)
    assert_one_line(code, err, "loss became nan")
    assert err.rstrip("\n").split("\n")[-1].startswith("aecore: error: loss became nan"), err[-500:]
