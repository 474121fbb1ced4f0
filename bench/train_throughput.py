"""Training throughput, all measured in ONE run on the same MLP AE (784-512-256-32, batch 128, MNIST):

1. aecore's trainer (device-resident uint8 tensor, index-slice batches) — images/s
2. a naive torchvision loop: datasets.MNIST + ToTensor + DataLoader, same model/optimiser — images/s
3. the matmul-bound rate: measured GFLOP/s of a large fp32 matmul / the model's training FLOPs per image
4. the step's own matmuls alone: the 3 GEMMs per Linear layer a training step runs (forward, grad input,
   grad weight) at batch 128, timed back to back with nothing else: the rate no trainer of this model
   and batch can beat on this device, however little else its step does; plus the optimiser's step alone
   (fused Adam over the model's parameters): GEMMs + Adam together give a ceiling for any trainer that
   uses Adam, before any element-wise layer, loss or autograd bookkeeping

All are measured side by side in --rounds rounds (medians reported). Prints both ratios. Usage:
    python bench/train_throughput.py [--data-dir ../shared/data] [--device cpu] [--seconds 20]
Without MNIST's training files it uses the bundled 10,000-image test split (said in the output).
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from aecore.data import load_dataset
from aecore.device import pick_device
from aecore.models import build_model
from aecore.train import Callback, TrainConfig, Trainer, make_adam

HIDDEN, LATENT, BATCH = [512, 256], 32, 128


def make_model(device):
    torch.manual_seed(0)
    return build_model("ae", {"input_shape": [1, 28, 28], "hidden": HIDDEN, "latent_dim": LATENT}).to(device)


def training_flops_per_image(model) -> float:
    """Multiply-adds of every Linear, x2 for FLOPs, x3 for forward + backward (grad input + grad weight)."""
    macs = sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear))
    return 6.0 * macs


def calls_per_second(fn, device, seconds: float, warmup: int = 3) -> float:
    """How many times a second fn() runs back to back, after `warmup` calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        reps += 1
    _sync(device)
    return reps / (time.perf_counter() - start)


def matmul_gflops(device, n=2048, seconds=3.0) -> float:
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    return 2 * n**3 * calls_per_second(lambda: a @ b, device, seconds) / 1e9


def step_matmuls_gflops(model, device, batch=BATCH, seconds=3.0) -> float:
    """GFLOP/s of exactly the matrix products one training step computes, with nothing else in between.

    Per Linear (in -> out): forward x (B, in) @ W.T (in, out) + bias, grad input g (B, out) @ W (out, in),
    grad weight g.T (out, B) @ x (B, in). Same FLOPs as training_flops_per_image * batch.
    """
    products = []
    for layer in (m for m in model.modules() if isinstance(m, torch.nn.Linear)):
        x = torch.randn(batch, layer.in_features, device=device)
        g = torch.randn(batch, layer.out_features, device=device)
        w, b = layer.weight.detach(), layer.bias.detach()
        products += [lambda x=x, w=w, b=b: torch.addmm(b, x, w.t()), lambda g=g, w=w: g @ w,
                     lambda g=g, x=x: g.t() @ x]
    flops = training_flops_per_image(model) * batch

    def one_step():
        for product in products:
            product()

    return flops * calls_per_second(one_step, device, seconds, warmup=5) / 1e9


def adam_step_ms(model, device, seconds=2.0) -> float:
    """Milliseconds per fused-Adam step over the model's parameters (the trainer's optimiser), alone."""
    params = [p.detach().clone().requires_grad_(True) for p in model.parameters()]
    for p in params:
        p.grad = torch.randn_like(p)
    opt = make_adam(params, lr=1e-3)
    return 1e3 / calls_per_second(opt.step, device, seconds, warmup=5)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


class StopAfter(Callback):
    """Times steady-state batches only: starts the clock after `warmup` batches, stops after `seconds`."""

    def __init__(self, cancel, warmup=20, seconds=10.0, device=None):
        self.cancel, self.warmup, self.seconds, self.device = cancel, warmup, seconds, device
        self.t0 = self.images0 = None
        self.rate = 0.0

    def on_batch_end(self, state):
        if state.step == self.warmup:
            _sync(self.device)
            self.t0, self.images0 = time.perf_counter(), state.images_seen
        elif self.t0 is not None and time.perf_counter() - self.t0 >= self.seconds:
            _sync(self.device)
            self.rate = (state.images_seen - self.images0) / (time.perf_counter() - self.t0)
            self.cancel.set()


def trainer_rate(data, device, seconds) -> float:
    import threading

    cancel = threading.Event()
    timer = StopAfter(cancel, seconds=seconds, device=device)
    config = TrainConfig(epochs=1000, batch_size=BATCH, lr=1e-3, log_every=50)
    Trainer(make_model(device), data, config=config, callbacks=[timer], device=str(device), cancel=cancel).fit()
    return timer.rate


def naive_rate(mnist_dir: Path | None, data, device, seconds) -> tuple[float, str]:
    """torchvision.datasets.MNIST + ToTensor through a DataLoader: a PIL image and a transform per item."""
    from torchvision import datasets, transforms

    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "MNIST" / "raw"
        raw.mkdir(parents=True)
        if mnist_dir is not None:
            for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
                with gzip.open(mnist_dir / f"{name}.gz") as src, open(raw / name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            dataset = datasets.MNIST(tmp, train=True, transform=transforms.ToTensor())
            what = "torchvision MNIST train (60,000)"
        else:  # same images as the trainer gets, through the same per-item PIL + ToTensor path
            from PIL import Image

            class Items(torch.utils.data.Dataset):
                def __len__(self):
                    return len(data)

                def __getitem__(self, i):
                    return transforms.ToTensor()(Image.fromarray(data.images[i, 0].numpy())), int(data.labels[i])

            dataset, what = Items(), "bundled test split via PIL + ToTensor"
        loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=0)
        model = make_model(device)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        images, t0, step = 0, None, 0
        while True:
            for x, _ in loader:
                x = x.to(device)
                out = model(x, target=x)
                opt.zero_grad(set_to_none=True)
                out.loss.backward()
                opt.step()
                step += 1
                if step == 20:
                    _sync(device)
                    t0, images = time.perf_counter(), 0
                elif t0 is not None:
                    images += x.shape[0]
                    if time.perf_counter() - t0 >= seconds:
                        _sync(device)
                        return images / (time.perf_counter() - t0), what


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--device")
    parser.add_argument("--seconds", type=float, default=15.0, help="timed seconds per loop and round")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternate matmul, trainer and naive loop this many times; report medians")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    data = load_dataset("mnist", "train", data_dir=args.data_dir)
    mnist_dir = args.data_dir / "mnist" if (args.data_dir / "mnist" / "train-images-idx3-ubyte.gz").is_file() else None
    model = make_model(device)
    flops = training_flops_per_image(model)
    # Interleaved rounds: this machine's speed drifts by tens of percent over minutes (a shared VM), so
    # each ratio is taken from measurements made side by side, not from one long loop after another.
    rounds = []
    for _ in range(max(1, args.rounds)):
        gflops_r = matmul_gflops(device)
        step_mm_r = step_matmuls_gflops(model, device)
        adam_r = adam_step_ms(model, device)
        # GEMMs + Adam only, no other work: the best a trainer with this model, batch and optimiser can do.
        ceiling_r = BATCH / (flops * BATCH / (step_mm_r * 1e9) + adam_r / 1e3)
        ours_r = trainer_rate(data, device, args.seconds)
        naive_r, naive_what = naive_rate(mnist_dir, data, device, args.seconds)
        rounds.append({"matmul_gflops": round(gflops_r, 1), "step_matmuls_gflops": round(step_mm_r, 1),
                       "adam_step_ms": round(adam_r, 2), "ceiling": round(ceiling_r),
                       "trainer": round(ours_r), "naive": round(naive_r),
                       "trainer_over_naive": round(ours_r / naive_r, 2)})
        print(f"round {len(rounds)}: {rounds[-1]}", flush=True)
    gflops = statistics.median(r["matmul_gflops"] for r in rounds)
    ours = statistics.median(r["trainer"] for r in rounds)
    naive = statistics.median(r["naive"] for r in rounds)
    step_mm = statistics.median(r["step_matmuls_gflops"] for r in rounds)
    adam_ms = statistics.median(r["adam_step_ms"] for r in rounds)
    ceiling = statistics.median(r["ceiling"] for r in rounds)
    bound = gflops * 1e9 / flops
    result = {
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(),
        "torch_threads": torch.get_num_threads(),
        "data": f"{data.name} {data.split} ({len(data):,} images, {data.source})",
        "naive_data": naive_what,
        "model": f"ae 784-{'-'.join(map(str, HIDDEN))}-{LATENT}, batch {BATCH}, Adam",
        "training_mflop_per_image": round(flops / 1e6, 3),
        "matmul_gflops": round(gflops, 1),
        "matmul_bound_images_per_s": round(bound),
        "step_matmuls_gflops": round(step_mm, 1),
        "step_matmuls_only_images_per_s": round(step_mm * 1e9 / flops),
        "step_matmuls_only_over_bound": round(step_mm / gflops, 3),
        "adam_step_ms": round(adam_ms, 2),
        "matmuls_plus_adam_ceiling_images_per_s": round(ceiling),
        "ceiling_over_bound": round(ceiling / bound, 3),
        "trainer_images_per_s": round(ours),
        "naive_images_per_s": round(naive),
        "trainer_over_bound": round(ours / bound, 3),
        "trainer_over_naive": round(ours / naive, 2),
        "rounds": rounds,
    }
    for key, value in result.items():
        print(f"{key:>28}: {value}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
