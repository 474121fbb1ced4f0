"""Training throughput of aecore against peer libraries, same models, same data, same recipe.

Issue 19, item 1. Three of aecore's registry models, each written once more in every peer system the
way that system's own users write it:

  mlp   aecore "ae": 784-512-256-32 (ReLU, linear code), mirrored decoder, sigmoid output,
        MSE summed over pixels and averaged over the batch
  conv  aecore "conv-ae" with its default config for 1x28x28: Conv(1->32, 3x3, stride 2, pad 1)+ReLU
        -> Conv(32->64, 3x3, s2, p1)+ReLU -> flatten (64x7x7) -> Linear(3136->32); decoder
        Linear(32->3136)+ReLU -> ConvT(64->32, 3x3, s2, p1, out-pad 1)+ReLU -> ConvT(32->1, same);
        sigmoid output, MSE summed over pixels, averaged over the batch
  vae   aecore "vae" with hidden (512, 256) and latent 32 (the MLP's sizes): encoder 784-512-256-64
        (mu, log sigma^2), reparameterised sample, decoder 32-256-512-784 logits; loss per example
        = Bernoulli/BCE summed over pixels + KL(q || N(0, I)), averaged over the batch (-ELBO, nats)

Systems (each run is its own subprocess, so imports and thread pools never meet):
  aecore     aecore.train.Trainer (TrainConfig(epochs, batch_size=128, lr=1e-3)) on load_dataset's ImageData
  torch      plain PyTorch: TensorDataset + DataLoader(shuffle=True), torch.optim.Adam, a for loop
  lightning  a LightningModule + Trainer(max_epochs, accelerator="cpu", enable_progress_bar=False,
             logger=False, enable_checkpointing=False), DataLoader over a TensorDataset
  pythae     pythae's AE / VAE with BaseEncoder / BaseDecoder subclasses, BaseTrainerConfig +
             TrainingPipeline (its BaseTrainer), as its README shows
  keras      Keras 3 on KERAS_BACKEND=torch: a functional keras.Model, compile(Adam), model.fit

All: batch 128, Adam lr 1e-3, the same 60,000 MNIST training images as float32 in [0, 1] (the
aecore worker loads them with aecore.data.load_dataset; the parent writes the same uint8 array for
the peers, converted to float the way ImageData.as_float does), torch threads = the CPU cores, CPU
only. The rate is over epochs 2..E (epoch 1 holds warm-up and one-off costs), timed inside each
system: aecore's on_epoch_end, Lightning's on_train_epoch_start / _end, pythae's on_epoch_begin /
_end, Keras' on_epoch_begin / _end, the plain loop's own clock. Final training loss: the mean over
the last epoch's batches as each system reports it, in the one definition above (per-example sum;
also shown per pixel, / 784).

What is deliberately *not* made equal (each system's own defaults, as its users get them): weight
initialisation (Keras: Glorot-uniform; the torch-based ones: PyTorch's), Adam's implementation
(aecore: fused torch Adam; torch / Lightning / pythae: torch's default foreach Adam; Keras: its own,
epsilon 1e-7), denormal flushing (aecore's trainer flushes denormals to zero; nobody else does),
Keras' channels-last image layout, pythae's always-on tqdm progress bar and per-epoch best-model
copy, and how the VAE's BCE is computed (pythae: sigmoid + binary_cross_entropy, which clamps
log at -100; the others: from logits).

Usage:
    python bench/peers.py [--models mlp,conv,vae] [--rounds 2] [--epochs 3] [--json out.json]
                          [--systems aecore,torch,lightning,pythae,keras] [--data-dir ../shared/data]
                          [--precision fp32|bf16]
--precision bf16 runs each system under its own bfloat16 autocast, as its users would switch it on
(pythae has none on a CPU and stays fp32; the table marks it).
A peer that is not installed is skipped with a message. Peers: pip install "lightning>=2"
"pythae>=0.1.2" "keras>=3" (they keep the installed torch).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("mlp", "conv", "vae")
SYSTEMS = ("aecore", "torch", "lightning", "pythae", "keras")
PEER_MODULE = {"aecore": "aecore", "torch": "torch", "lightning": "lightning", "pythae": "pythae", "keras": "keras"}
HIDDEN, LATENT, BATCH, LR = (512, 256), 32, 128, 1e-3
CONV_CHANNELS = (32, 64)          # aecore's default_conv_channels((1, 28, 28))
PIXELS = 784
RESULT = "PEERS-RESULT "
LIMIT = 0                         # --limit: first N images only (a quick check of the script, not a measurement)
PRECISION = "fp32"                # --precision: bf16 runs every system that can under its own bfloat16 autocast


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


# ---------------------------------------------------------------------------------------------------
# the worker: one system, one model, one training run, in its own process
# ---------------------------------------------------------------------------------------------------
class EpochClock:
    """Wall-clock marks at epoch starts / ends, shared by every system's hook."""

    def __init__(self, epochs: int):
        self.epochs = epochs
        self.start_2: float | None = None      # start of epoch 2 (or end of epoch 1)
        self.end_last: float | None = None
        self.epoch_ends: list[float] = []
        self.threads: int | None = None

    def begin(self, epoch: int) -> None:       # epoch: 1-based
        if epoch == 2:
            self.start_2 = time.perf_counter()

    def end(self, epoch: int) -> None:
        import torch

        now = time.perf_counter()
        self.epoch_ends.append(now)
        if epoch == 1 and self.start_2 is None:
            self.start_2 = now                 # systems with no epoch-begin hook
        if epoch == self.epochs:
            self.end_last = now
        self.threads = torch.get_num_threads()  # in the thread that trains

    def rate(self, n: int) -> float:
        return (self.epochs - 1) * n / (self.end_last - self.start_2)


def torch_modules(model: str):
    """(encoder, decoder) torch modules mirroring aecore's layers; decoder outputs pre-activations."""
    from torch import nn

    if model in ("mlp", "vae"):
        out = LATENT * (2 if model == "vae" else 1)
        enc = nn.Sequential(nn.Flatten(), nn.Linear(PIXELS, HIDDEN[0]), nn.ReLU(), nn.Linear(HIDDEN[0], HIDDEN[1]),
                            nn.ReLU(), nn.Linear(HIDDEN[1], out))
        dec = nn.Sequential(nn.Linear(LATENT, HIDDEN[1]), nn.ReLU(), nn.Linear(HIDDEN[1], HIDDEN[0]), nn.ReLU(),
                            nn.Linear(HIDDEN[0], PIXELS), nn.Unflatten(1, (1, 28, 28)))
        return enc, dec
    c1, c2 = CONV_CHANNELS
    enc = nn.Sequential(nn.Conv2d(1, c1, 3, stride=2, padding=1), nn.ReLU(),
                        nn.Conv2d(c1, c2, 3, stride=2, padding=1), nn.ReLU(),
                        nn.Flatten(), nn.Linear(c2 * 7 * 7, LATENT))
    dec = nn.Sequential(nn.Linear(LATENT, c2 * 7 * 7), nn.ReLU(), nn.Unflatten(1, (c2, 7, 7)),
                        nn.ConvTranspose2d(c2, c1, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),
                        nn.ConvTranspose2d(c1, 1, 3, stride=2, padding=1, output_padding=1))
    return enc, dec


def torch_loss(model: str, enc, dec, x):
    """The loss every torch-based peer (plain loop, Lightning) computes: per-example sum, batch mean."""
    import torch
    import torch.nn.functional as F

    b = x.shape[0]
    if model == "vae":
        mu, logvar = enc(x).chunk(2, dim=1)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        logits = dec(z)
        rec = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / b
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / b
        return rec + kl
    out = torch.sigmoid(dec(enc(x)))
    return F.mse_loss(out, x, reduction="sum") / b


def load_float_images(npy: str):
    import numpy as np
    import torch

    images = torch.from_numpy(np.load(npy))          # uint8 (N, 1, 28, 28), as ImageData.images
    return images.float().div_(255.0)                # as ImageData.as_float


def run_aecore(model: str, epochs: int, data_dir: str, npy: str) -> dict:
    import threading

    import torch

    from aecore.data import load_dataset
    from aecore.models import build_model
    from aecore.train import Callback, TrainConfig, Trainer

    data = load_dataset("mnist", "train", data_dir=data_dir)
    if LIMIT:
        data = data.subset(slice(0, LIMIT))
    name, config = {"mlp": ("ae", {"hidden": list(HIDDEN), "latent_dim": LATENT}),
                    "conv": ("conv-ae", {"latent_dim": LATENT}),
                    "vae": ("vae", {"hidden": list(HIDDEN), "latent_dim": LATENT})}[model]
    torch.manual_seed(0)
    net = build_model(name, {"input_shape": [1, 28, 28], **config})
    clock = EpochClock(epochs)

    class Timer(Callback):
        def on_epoch_end(self, state):
            clock.end(state.epoch)                   # state.epoch: epochs completed

    result = Trainer(net, data, config=TrainConfig(epochs=epochs, batch_size=BATCH, lr=LR),
                     callbacks=[Timer()], device="cpu", cancel=threading.Event(), precision=PRECISION).fit()
    return {"rate": clock.rate(len(data)), "loss": result.history[-1]["train"]["loss"], "n": len(data),
            "threads": clock.threads, "parameters": sum(p.numel() for p in net.parameters()),
            "data_checksum": int(data.images.sum(dtype=torch.int64))}


def run_torch(model: str, epochs: int, data_dir: str, npy: str) -> dict:
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    x_all = load_float_images(npy)
    torch.manual_seed(0)
    enc, dec = torch_modules(model)
    net = torch.nn.ModuleDict({"encoder": enc, "decoder": dec})
    loader = DataLoader(TensorDataset(x_all), batch_size=BATCH, shuffle=True)
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    clock = EpochClock(epochs)
    loss_sum = 0.0
    for epoch in range(1, epochs + 1):
        clock.begin(epoch)
        net.train()
        loss_sum, batches = 0.0, 0
        for (x,) in loader:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=PRECISION == "bf16"):   # PyTorch's CPU AMP
                loss = torch_loss(model, enc, dec, x)
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_sum += loss.item()
            batches += 1
        clock.end(epoch)
    return {"rate": clock.rate(len(x_all)), "loss": loss_sum / batches, "n": len(x_all), "threads": clock.threads,
            "parameters": sum(p.numel() for p in net.parameters()),
            "data_checksum": int(torch.round(x_all * 255).sum(dtype=torch.int64))}


def run_lightning(model: str, epochs: int, data_dir: str, npy: str) -> dict:
    import lightning as L
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    x_all = load_float_images(npy)
    clock = EpochClock(epochs)

    class LitAutoEncoder(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.encoder, self.decoder = torch_modules(model)

        def training_step(self, batch, batch_idx):
            (x,) = batch
            loss = torch_loss(model, self.encoder, self.decoder, x)
            self.log("train_loss", loss, on_step=False, on_epoch=True)
            return loss

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=LR)

    class Timer(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            clock.begin(trainer.current_epoch + 1)

        def on_train_epoch_end(self, trainer, pl_module):
            clock.end(trainer.current_epoch + 1)

    torch.manual_seed(0)
    lit = LitAutoEncoder()
    loader = DataLoader(TensorDataset(x_all), batch_size=BATCH, shuffle=True)
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", enable_progress_bar=False, logger=False,
                        enable_checkpointing=False, callbacks=[Timer()],
                        precision="bf16-mixed" if PRECISION == "bf16" else "32-true")
    trainer.fit(lit, loader)
    return {"rate": clock.rate(len(x_all)), "loss": float(trainer.callback_metrics["train_loss"]), "n": len(x_all),
            "threads": clock.threads, "parameters": sum(p.numel() for p in lit.parameters())}


def run_pythae(model: str, epochs: int, data_dir: str, npy: str) -> dict:
    import torch
    from pythae.models import AE, VAE, AEConfig, VAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder
    from pythae.pipelines import TrainingPipeline
    from pythae.trainers import BaseTrainerConfig
    from pythae.trainers.training_callbacks import TrainingCallback

    x_all = load_float_images(npy)
    clock = EpochClock(epochs)
    losses: list[float] = []

    class Encoder(BaseEncoder):
        def __init__(self):
            BaseEncoder.__init__(self)
            self.layers, _ = torch_modules(model)

        def forward(self, x):
            h = self.layers(x)
            if model == "vae":
                mu, logvar = h.chunk(2, dim=1)
                return ModelOutput(embedding=mu, log_covariance=logvar)
            return ModelOutput(embedding=h)

    class Decoder(BaseDecoder):
        def __init__(self):
            BaseDecoder.__init__(self)
            _, self.layers = torch_modules(model)

        def forward(self, z):
            return ModelOutput(reconstruction=torch.sigmoid(self.layers(z)))

    class Timer(TrainingCallback):
        def on_epoch_begin(self, training_config, **kwargs):
            clock.begin(kwargs["epoch"])

        def on_epoch_end(self, training_config, **kwargs):
            clock.end(len(clock.epoch_ends) + 1)

        def on_log(self, training_config, logs, **kwargs):
            losses.append(logs["train_epoch_loss"])

    torch.manual_seed(0)
    if model == "vae":
        config = VAEConfig(input_dim=(1, 28, 28), latent_dim=LATENT, reconstruction_loss="bce")
        net = VAE(model_config=config, encoder=Encoder(), decoder=Decoder())
    else:
        config = AEConfig(input_dim=(1, 28, 28), latent_dim=LATENT)
        net = AE(model_config=config, encoder=Encoder(), decoder=Decoder())
    with tempfile.TemporaryDirectory() as out:
        # keep_best_on_train: without eval data pythae keeps the best model by training loss (without it
        # and without eval data, BaseTrainer never sets its best model and fails when saving it)
        training_config = BaseTrainerConfig(output_dir=out, num_epochs=epochs, learning_rate=LR,
                                            per_device_train_batch_size=BATCH, optimizer_cls="Adam",
                                            keep_best_on_train=True, no_cuda=True)
        TrainingPipeline(model=net, training_config=training_config)(train_data=x_all, callbacks=[Timer()])
    return {"rate": clock.rate(len(x_all)), "loss": losses[-1], "n": len(x_all), "threads": clock.threads,
            "parameters": sum(p.numel() for p in net.parameters()),
            "precision": "fp32"}      # pythae's `amp` is CUDA float16 only (its trainer turns it off with no_cuda)


def run_keras(model: str, epochs: int, data_dir: str, npy: str) -> dict:
    os.environ["KERAS_BACKEND"] = "torch"
    import keras
    from keras import layers, ops

    x_all = load_float_images(npy).numpy()
    n = len(x_all)
    clock = EpochClock(epochs)
    keras.utils.set_random_seed(0)
    if PRECISION == "bf16":           # Keras' mixed-precision guide: bfloat16 compute, the output layer in float32
        keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    out_dtype = "float32"

    if model == "conv":
        x_all = x_all.transpose(0, 2, 3, 1).copy()        # Keras' default layout: channels last
        c1, c2 = CONV_CHANNELS
        inputs = keras.Input((28, 28, 1))
        h = layers.Conv2D(c1, 3, strides=2, padding="same", activation="relu")(inputs)
        h = layers.Conv2D(c2, 3, strides=2, padding="same", activation="relu")(h)
        z = layers.Dense(LATENT)(layers.Flatten()(h))
        h = layers.Reshape((7, 7, c2))(layers.Dense(7 * 7 * c2, activation="relu")(z))
        h = layers.Conv2DTranspose(c1, 3, strides=2, padding="same", activation="relu")(h)
        outputs = layers.Conv2DTranspose(1, 3, strides=2, padding="same", activation="sigmoid", dtype=out_dtype)(h)
    else:
        x_all = x_all.reshape(n, PIXELS)
        inputs = keras.Input((PIXELS,))
        h = layers.Dense(HIDDEN[0], activation="relu")(inputs)
        h = layers.Dense(HIDDEN[1], activation="relu")(h)
        if model == "vae":
            class Sampling(layers.Layer):
                """z = mu + sigma * eps; adds the batch-mean KL(q || N(0, I)) to the model's loss."""

                def __init__(self, **kwargs):
                    super().__init__(**kwargs)
                    self.seed_generator = keras.random.SeedGenerator(0)

                def call(self, stats):
                    mu, logvar = ops.split(stats, 2, axis=-1)
                    kl = -0.5 * ops.sum(1 + logvar - ops.square(mu) - ops.exp(logvar), axis=-1)
                    self.add_loss(ops.mean(kl))
                    eps = keras.random.normal(ops.shape(mu), seed=self.seed_generator)
                    return mu + ops.exp(0.5 * logvar) * eps

            z = Sampling()(layers.Dense(2 * LATENT)(h))
        else:
            z = layers.Dense(LATENT)(h)
        h = layers.Dense(HIDDEN[1], activation="relu")(z)
        h = layers.Dense(HIDDEN[0], activation="relu")(h)
        outputs = layers.Dense(PIXELS, activation=None if model == "vae" else "sigmoid", dtype=out_dtype)(h)
    net = keras.Model(inputs, outputs)

    def summed_bce(y_true, logits):        # per-example sum over pixels; Keras averages it over the batch
        return ops.sum(ops.binary_crossentropy(y_true, logits, from_logits=True), axis=-1)

    def summed_mse(y_true, y_pred):
        return ops.sum(ops.reshape(ops.square(y_true - y_pred), (ops.shape(y_true)[0], -1)), axis=-1)

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            clock.begin(epoch + 1)

        def on_epoch_end(self, epoch, logs=None):
            clock.end(epoch + 1)

    net.compile(optimizer=keras.optimizers.Adam(learning_rate=LR), loss=summed_bce if model == "vae" else summed_mse)
    history = net.fit(x_all, x_all, batch_size=BATCH, epochs=epochs, shuffle=True, verbose=0, callbacks=[Timer()])
    return {"rate": clock.rate(n), "loss": float(history.history["loss"][-1]), "n": n, "threads": clock.threads,
            "parameters": int(net.count_params())}


RUNNERS = {"aecore": run_aecore, "torch": run_torch, "lightning": run_lightning, "pythae": run_pythae,
           "keras": run_keras}


def worker(args) -> int:
    global LIMIT, PRECISION
    import torch

    LIMIT, PRECISION = args.limit, args.precision

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    out = RUNNERS[args.worker](args.model, args.epochs, args.data_dir, args.npy)
    out.setdefault("precision", PRECISION)
    out.update(system=args.worker, model=args.model, seconds=round(time.perf_counter() - started, 1),
               loss_per_pixel=out["loss"] / PIXELS)
    print(RESULT + json.dumps(out), flush=True)
    return 0


# ---------------------------------------------------------------------------------------------------
# the parent: interleaved rounds of subprocesses, then the table
# ---------------------------------------------------------------------------------------------------
def available(system: str) -> bool:
    return importlib.util.find_spec(PEER_MODULE[system]) is not None


def spawn(system: str, model: str, args, npy: str, threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), CUDA_VISIBLE_DEVICES="",
               KERAS_BACKEND="torch", PYTHONWARNINGS="ignore", TF_CPP_MIN_LOG_LEVEL="3")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", system, "--model", model,
           "--epochs", str(args.epochs), "--data-dir", str(args.data_dir), "--npy", npy, "--threads", str(threads),
           "--limit", str(args.limit), "--precision", args.precision]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=args.timeout)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT):
            return json.loads(line[len(RESULT):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
    raise RuntimeError(f"{system}/{model} exited {proc.returncode}:\n  " + "\n  ".join(tail))


def table(results: dict, models: list[str], systems: list[str], rounds: int) -> tuple[str, dict]:
    rows, summary = [], {}
    head = (f"{'model':<5} {'system':<14} {'images/s median':>15} {'per round':>22} "
            f"{'final loss/example':>18} {'per pixel':>10} {'params':>9} {'vs aecore loss':>14} {'aecore / this':>13}")
    rows.append(head)
    rows.append("-" * len(head))
    for model in models:
        runs = {s: results.get((s, model), []) for s in systems}
        med = {s: statistics.median(r["rate"] for r in v) for s, v in runs.items() if v}
        loss = {s: statistics.median(r["loss"] for r in v) for s, v in runs.items() if v}
        peers = {s: m for s, m in med.items() if s != "aecore"}
        fastest = max(peers, key=peers.get) if peers else None
        for s in systems:
            if s not in med:
                continue
            per_round = " / ".join(f"{r['rate']:,.0f}" for r in runs[s])
            label = s if runs[s][0].get("precision") == PRECISION else f"{s} ({runs[s][0].get('precision')})"
            params = runs[s][0]["parameters"]
            rel = f"{loss[s] / loss['aecore'] - 1:+.1%}" if "aecore" in loss and s != "aecore" else ""
            ratio = f"{med['aecore'] / med[s]:.2f}" if "aecore" in med and s != "aecore" else ""
            rows.append(f"{model:<5} {label:<14} {med[s]:>15,.0f} {per_round:>22} {loss[s]:>18.3f} "
                        f"{loss[s] / PIXELS:>10.5f} {params:>9,} {rel:>14} {ratio:>13}")
        entry = {"median_images_per_s": {s: round(v) for s, v in med.items()},
                 "final_loss_per_example": {s: round(v, 4) for s, v in loss.items()}}
        if "aecore" in med and fastest:
            entry.update(fastest_peer=fastest, aecore_over_fastest_peer=round(med["aecore"] / med[fastest], 2),
                         aecore_loss_vs_peers={s: round(loss["aecore"] / loss[s] - 1, 4) for s in peers})
            rows.append(f"{model:<5} aecore / fastest peer ({fastest}): {entry['aecore_over_fastest_peer']:.2f}x "
                        f"(goal >= 2)")
        rows.append("")
        summary[model] = entry
    return "\n".join(rows), summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated: mlp,conv,vae")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated: " + ",".join(SYSTEMS))
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; medians reported")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (>= 2: the rate is over 2..E)")
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per run before it is abandoned")
    parser.add_argument("--limit", type=int, default=0, help="train on the first N images only (a quick check)")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="bf16: each system under its own bfloat16 autocast where it has one (aecore's "
                             "precision='bf16', torch.autocast, Lightning's bf16-mixed, Keras' mixed_bfloat16; "
                             "pythae's amp is CUDA-only, so it stays fp32); needs a CPU with native bfloat16")
    parser.add_argument("--worker", choices=SYSTEMS, help=argparse.SUPPRESS)
    parser.add_argument("--model", choices=MODELS, help=argparse.SUPPRESS)
    parser.add_argument("--npy", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=cores(), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    global PRECISION
    PRECISION = args.precision

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    for bad in [m for m in models if m not in MODELS] + [s for s in systems if s not in SYSTEMS]:
        parser.error(f"unknown model or system {bad!r}")
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the rate is over epochs 2..E)")
    for s in list(systems):
        if not available(s):
            print(f"skipping {s}: {PEER_MODULE[s]} is not installed (pip install the bench peers)", flush=True)
            systems.remove(s)
    if not systems:
        print("nothing to run")
        return 1

    import numpy as np
    import torch

    from aecore.data import load_dataset

    data = load_dataset("mnist", "train", data_dir=args.data_dir)
    if args.limit:
        data = data.subset(slice(0, args.limit))
    threads = cores()
    versions = {"python": sys.version.split()[0], "torch": torch.__version__}
    for s in systems:
        if s not in ("aecore", "torch"):
            from importlib.metadata import version
            versions[s] = version({"lightning": "lightning", "pythae": "pythae", "keras": "keras"}[s])
    print(f"data: {data.name} {data.split}, {len(data):,} images ({data.source}); cores = torch threads = {threads}; "
          f"{args.epochs} epochs, rate over epochs 2-{args.epochs}; {args.rounds} rounds; {args.precision}; {versions}",
          flush=True)
    results: dict[tuple[str, str], list[dict]] = {}
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="aecore-peers-") as tmp:
        npy = str(Path(tmp) / "mnist-train-uint8.npy")
        np.save(npy, data.images.numpy())
        checksum = int(data.images.sum(dtype=torch.int64))
        for r in range(args.rounds):
            for model in models:
                order = systems[r % len(systems):] + systems[:r % len(systems)]   # rotate the order each round
                for system in order:
                    t0 = time.perf_counter()
                    try:
                        out = spawn(system, model, args, npy, threads)
                    except (RuntimeError, subprocess.TimeoutExpired) as err:
                        failures.append(f"round {r + 1} {system}/{model}: {err}")
                        print(f"round {r + 1} {model:<4} {system:<10} FAILED: {err}", flush=True)
                        continue
                    if out.get("data_checksum", checksum) != checksum:
                        raise SystemExit(f"{system} trained on other data (checksum {out['data_checksum']} != {checksum})")
                    out["round"] = r + 1
                    results.setdefault((system, model), []).append(out)
                    print(f"round {r + 1} {model:<4} {system:<10} {out['rate']:>9,.0f} images/s  loss {out['loss']:.4f}"
                          f"  {out['precision']}"
                          f"  ({out['threads']} threads, {out['parameters']:,} params, "
                          f"{time.perf_counter() - t0:.0f} s with start-up)", flush=True)
    text, summary = table(results, models, systems, args.rounds)
    print()
    print(text)
    if failures:
        print("failures:\n" + "\n".join(failures))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "data": f"{data.name} {data.split} ({len(data):,} images, {data.source})", "threads": threads,
            "epochs": args.epochs, "rounds": args.rounds, "batch": BATCH, "lr": LR, "versions": versions,
            "precision": args.precision,
            "summary": summary, "runs": [r for v in results.values() for r in v], "failures": failures,
        }, indent=2) + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
