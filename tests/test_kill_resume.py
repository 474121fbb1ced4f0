"""A training process killed with SIGKILL leaves a loadable checkpoint, and --resume finishes the run."""

import json
import os
import signal
import subprocess
import sys
import time

from safetensors import safe_open

from aecore.train import CHECKPOINT_NAME

ARGS = ["train", "--model", "ae", "--dataset", "digits", "--set", "hidden=[64]", "--latent-dim", "8",
        "--batch-size", "32", "--epochs", "60", "--quiet"]


def test_sigkill_mid_training_then_resume(tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, AECORE_OFFLINE="1")
    proc = subprocess.Popen([sys.executable, "-m", "aecore", *ARGS, "--out", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    checkpoint = out / CHECKPOINT_NAME
    deadline = time.time() + 120
    while time.time() < deadline and not checkpoint.exists():
        time.sleep(0.05)
    assert checkpoint.exists(), proc.stderr.read().decode() if proc.poll() is not None else "no checkpoint in 120 s"
    time.sleep(0.3)  # a few more epochs, then kill wherever it is (mid-epoch or mid-write)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "model.safetensors").exists()  # the run never finished

    with safe_open(str(checkpoint), framework="pt") as f:  # loadable, with a consistent trainer state
        state = json.loads(f.metadata()["trainer"])
    done = state["epoch"]
    assert 1 <= done < 60 and [h["epoch"] for h in state["history"]] == list(range(1, done + 1))
    leftovers = [p.name for p in out.iterdir() if p.name != CHECKPOINT_NAME]
    assert all(name.endswith(".tmp") for name in leftovers)  # at most a half-written temp file

    resumed = subprocess.run([sys.executable, "-m", "aecore", *ARGS, "--out", str(out), "--resume"],
                             env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    epochs = [h["epoch"] for h in metrics["training"]["history"]]
    assert epochs == list(range(1, 61))
    assert not checkpoint.exists()  # the finished model folder replaced the run folder
