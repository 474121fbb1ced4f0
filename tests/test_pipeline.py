"""aecore.pipeline: `aecore train`, `aecore zoo build` and the app's training jobs save a trained model
the same way (the provenance record, config.json's fields), and metrics.json is what `aecore eval`
measures on the folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aecore import zoo
from aecore.cli import main
from aecore.device import device_label
from aecore.lab import jobs
from aecore.store import load_model

TRAINING_KEYS = {"history", "seconds", "images_seen", "device", "precision", "processes", "stopped_early"}


@pytest.mark.usefixtures("no_job_left_running")
def test_the_cli_the_zoo_and_a_job_record_the_same_training_provenance(tmp_path, capsys):
    """The same model (an AE with a 4-D code, 2 epochs on digits), trained by each of the three callers."""
    assert main(["train", "--model", "ae", "--dataset", "digits", "--epochs", "2", "--latent-dim", "4",
                 "--set", "hidden=[16]", "--quiet", "--out", str(tmp_path / "cli")]) == 0
    recipe = zoo.Recipe(id="ae-same", model="ae", config={"hidden": [16], "latent_dim": 4},
                        train={"seed": 0, "epochs": 2, "batch_size": 128, "lr": 1e-3}, about="same",
                        datasets=("digits",))
    zoo.build_one(recipe, "digits", root=tmp_path / "zoo", map_methods=("pca",))
    job = jobs.start(jobs.JobSpec(name="same", model="ae", dataset="digits", latent_dim=4, epochs=2,
                                  config={"hidden": [16]}))
    assert job.join(120) and job.status == "done", job.snapshot().error
    folders = {"cli": tmp_path / "cli", "zoo": tmp_path / "zoo" / "digits" / "ae-same",
               "app": Path(job.snapshot().path)}

    config_keys = {}
    for caller, folder in folders.items():
        loaded = load_model(folder)
        training = loaded.metrics["training"]
        assert set(training) == TRAINING_KEYS, caller
        assert [row["epoch"] for row in training["history"]] == [1, 2], caller
        assert training["seconds"] == round(sum(row["seconds"] for row in training["history"]), 1), caller
        assert training["precision"] == "fp32" and training["processes"] == 1, caller
        assert training["stopped_early"] is False, caller
        assert loaded.info["trained_on"] == device_label(training["device"]), caller
        assert loaded.info["recipe"]["epochs"] == 2 and loaded.info["recipe"]["val_fraction"] > 0, caller
        config_keys[caller] = set(loaded.info) - {"notes"}          # the CLI's models carry no notes
    assert config_keys["cli"] == config_keys["zoo"] == config_keys["app"]
    capsys.readouterr()


def test_cli_metrics_are_what_eval_measures_on_the_saved_half_precision_folder(tmp_path, capsys):
    """float16 storage and a training seed other than eval's: metrics.json still matches `aecore eval`."""
    out = tmp_path / "half"
    assert main(["train", "--model", "ae", "--dataset", "digits", "--epochs", "1", "--latent-dim", "4",
                 "--set", "hidden=[16]", "--noise", "gaussian:0.3", "--seed", "3", "--half", "--quiet",
                 "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["eval", str(out), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    saved = json.loads((out / "metrics.json").read_text())
    for key in ("mse", "psnr", "noisy_psnr", "psnr_gain"):
        assert again[key] == pytest.approx(saved[key], abs=1e-6), key
