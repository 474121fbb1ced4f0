"""A 2-process run for tests/test_distributed.py, started by torchrun: `ddp_worker.py OUT REPORTS`.

Greedy stacked-ae on digits (stages layer1, layer2, finetune; one epoch each), stopped by a cancel
after its second epoch, so OUT keeps the checkpoint of a 2-process run for a 1-process run to
resume; each process writes REPORTS/rank<N>.json (how its run ended). `make_trainer` builds the same
run in-process for the test's reference.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import torch

from aecore import distributed
from aecore.data import load_dataset, split_off
from aecore.models import build_model
from aecore.train import Callback, TrainConfig, Trainer

SEED = 5
CONFIG = TrainConfig(epochs=1, stage_epochs=1, batch_size=64, noise="masking:0.25", seed=SEED)


def make_trainer(checkpoint_dir: Path | None = None, **kwargs) -> Trainer:
    train, val = split_off(load_dataset("digits", "train"), 0.05, seed=SEED)
    torch.manual_seed(SEED)
    model = build_model("stacked-ae", {"input_shape": [1, 8, 8], "hidden": [16], "latent_dim": 8})
    return Trainer(model, train, val=val, config=CONFIG, device="cpu", checkpoint_dir=checkpoint_dir, **kwargs)


class StopAfterTwoEpochs(Callback):
    def __init__(self, cancel: threading.Event):
        self.cancel = cancel

    def on_epoch_end(self, state) -> None:
        if len(state.history) == 2:
            self.cancel.set()


if __name__ == "__main__":
    distributed.init("cpu")
    try:
        cancel = threading.Event()
        trainer = make_trainer(Path(sys.argv[1]), callbacks=[StopAfterTwoEpochs(cancel)], cancel=cancel)
        result = trainer.fit()
        report = {"rank": distributed.rank(), "world": distributed.world_size(), "cancelled": result.cancelled,
                  "step": trainer.state.step, "epochs": len(result.history)}
        (Path(sys.argv[2]) / f"rank{distributed.rank()}.json").write_text(json.dumps(report))
    finally:
        distributed.cleanup()
