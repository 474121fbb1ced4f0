import json
import subprocess
import sys

import pytest

from aecore.cli import main
from tests.helpers import no_native_bf16


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("aecore: error:")]


def test_list_json_names_models_and_datasets(capsys):
    code, out, _ = run(capsys, "list", "--json")
    listing = json.loads(out)
    assert code == 0
    assert {"ae", "vae", "hyper-ae", "rank-ordered-ae"} <= {m["name"] for m in listing["models"]}
    assert {"mnist", "fashion-mnist", "digits", "cifar10-patches"} <= set(listing["datasets"])
    assert isinstance(listing["pretrained"], list)


def test_train_then_eval_on_digits(capsys, tmp_path):
    out_dir = tmp_path / "run"
    code, out, _ = run(capsys, "train", "--model", "ae", "--dataset", "digits", "--epochs", "2", "--latent-dim", "4",
                       "--set", "hidden=[32]", "--noise", "masking:0.25", "--quiet", "--out", str(out_dir))
    assert code == 0 and "saved" in out
    assert sorted(p.name for p in out_dir.iterdir()) == ["config.json", "metrics.json", "model.safetensors"]
    info = json.loads((out_dir / "config.json").read_text())
    assert info["recipe"]["noise"] == "masking:0.25" and info["trained_on"].startswith("cpu")
    assert info["config"]["hidden"] == [32] and info["dataset"] == "digits"
    code, out, _ = run(capsys, "eval", str(out_dir), "--json", "--noise", "masking:0.25")
    metrics = json.loads(out)
    assert code == 0 and metrics["dataset"] == "digits" and metrics["noise"] == "masking:0.25"
    assert 0 < metrics["mse"] < 0.2 and metrics["psnr_gain"] == pytest.approx(metrics["psnr"] - metrics["noisy_psnr"], abs=1e-5)


def test_resume_flag_without_checkpoint(capsys, tmp_path):
    code, _, err = run(capsys, "train", "--model", "ae", "--dataset", "digits", "--resume", "--quiet",
                       "--out", str(tmp_path / "none"))
    assert code == 2 and error_lines(err) and "nothing to resume" in err


@pytest.mark.parametrize("argv, message", [
    (["train", "--model", "nope", "--dataset", "digits", "--out", "x"], "unknown model 'nope'"),
    (["train", "--model", "ae", "--dataset", "nope", "--out", "x"], "unknown dataset 'nope'"),
    (["train", "--model", "ae", "--dataset", "digits", "--epochs", "0", "--out", "x"], "epochs = 0 is out of range"),
    (["train", "--model", "ae", "--dataset", "digits", "--lr", "-1", "--out", "x"], "lr = -1.0 is out of range"),
    (["train", "--model", "ae", "--dataset", "digits", "--noise", "masking:1.5", "--out", "x"], "fraction nu must be in"),
    (["train", "--model", "ae", "--dataset", "digits", "--noise", "blur:1", "--out", "x"], "unknown noise 'blur'"),
    (["train", "--model", "ae", "--dataset", "digits", "--latent-dim", "0", "--out", "x"], "latent_dim = 0 is out of range"),
    (["train", "--model", "ae", "--dataset", "digits", "--set", "bogus=1", "--out", "x"], "unknown field(s) bogus"),
    (["train", "--model", "ae", "--dataset", "digits", "--set", "nonsense", "--out", "x"], "expected key=value"),
    (["train", "--model", "ae", "--dataset", "digits", "--set", "hidden=[-5]", "--out", "x"], "hidden entries = -5 is out of range"),
    (["train", "--model", "ae", "--dataset", "digits", "--precision", "fp16", "--out", "x"], "invalid choice: 'fp16'"),
    (["eval", "/no/such/model"], "no model folder or pretrained id"),
    (["train", "--model", "ae"], "the following arguments are required"),
    (["frobnicate"], "invalid choice"),
])
def test_errors_are_one_line_exit_2(capsys, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse exits directly
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2
    lines = error_lines(err)
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err


def test_bf16_on_a_cpu_without_native_bf16_is_one_line_exit_2(capsys, tmp_path, monkeypatch):
    no_native_bf16(monkeypatch)
    code, _, err = run(capsys, "train", "--model", "ae", "--dataset", "digits", "--precision", "bf16",
                       "--device", "cpu", "--out", str(tmp_path / "x"))
    lines = error_lines(err)
    assert code == 2 and len(lines) == 1 and "precision bf16: this CPU has no native bfloat16" in lines[0], err
    assert "Traceback" not in err


def test_no_traceback_from_a_real_process(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "aecore", "eval", str(tmp_path / "missing")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()       # one line; it lists the pretrained ids when there are some
    assert len(lines) == 1 and lines[0].startswith(
        f"aecore: error: no model folder or pretrained id {str(tmp_path / 'missing')!r}")
