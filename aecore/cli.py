"""`aecore` command line: list, train, eval.

Every expected failure (unknown model, missing data, bad flag value, corrupt file, a path the system
refuses) is one line on stderr and exit code 2; no traceback. `aecore train` also runs under torchrun
(DDP): every process trains, rank 0 alone prints progress, evaluates and saves.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from aecore.errors import AecoreError, ConfigError

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints usage too)
        self.exit(EXIT_USAGE, f"aecore: error: {message} (see 'aecore {self.prog.split()[-1]} --help')\n"
                  if " " in self.prog else f"aecore: error: {message} (see 'aecore --help')\n")


def _parse_set(items: Sequence[str]) -> dict[str, Any]:
    """--set key=value (value parsed as JSON when it is JSON, else a string)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set hidden=[256,64]")
        try:
            out[key.strip().replace("-", "_")] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip().replace("-", "_")] = raw
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="aecore", description="Autoencoder lab: train, evaluate and inspect autoencoders.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("list", help="models, datasets and pretrained ids")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("train", help="train a model and save it to --out")
    p.add_argument("--model", required=True)
    p.add_argument("--dataset", required=True, help="mnist, fashion-mnist, cifar10, digits, folder:PATH, ...")
    p.add_argument("--out", required=True, type=Path, help="model folder to write")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--latent-dim", type=int)
    p.add_argument("--noise", help="gaussian:SIGMA | masking:NU | saltpepper:NU (denoising)")
    p.add_argument("--labels", type=int, help="semi-supervised: keep N labels (class-balanced)")
    p.add_argument("--stage-epochs", type=int, help="epochs per greedy pretraining stage")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-fraction", type=float, default=0.05, help="held out of the training split")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="model config field")
    p.add_argument("--data-dir", type=Path)
    p.add_argument("--device", help="cpu | cuda | mps (default: best available); under torchrun: cuda or cpu")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="bf16: bfloat16 autocast for forward passes (CUDA only)")
    p.add_argument("--resume", action="store_true", help="continue from --out's last checkpoint")
    p.add_argument("--half", action="store_true", help="store weights in float16")
    p.add_argument("--quiet", action="store_true")

    p = sub.add_parser("eval", help="test metrics of a model folder or pretrained id")
    p.add_argument("model", help="model folder or pretrained id (e.g. mnist/ae-d32)")
    p.add_argument("--dataset", help="default: the dataset the model was trained on")
    p.add_argument("--split", default="test", choices=["train", "test"])
    p.add_argument("--noise", help="corrupt inputs first (denoising metrics); default: the noise the model "
                                   "was trained with, 'none' for clean inputs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", type=Path)
    p.add_argument("--device")
    p.add_argument("--json", action="store_true")

    zoo = sub.add_parser("zoo", help="the pretrained zoo: build it from its recipes, render its table")
    zsub = zoo.add_subparsers(dest="zoo_command", required=True, parser_class=_Parser)
    p = zsub.add_parser("build", help="train, measure and map every recipe (or --only some)")
    p.add_argument("--only", action="append", default=[], metavar="ID", help="e.g. ae-d32 or mnist/ae-d32")
    p.add_argument("--data-dir", type=Path)
    p.add_argument("--device")
    p.add_argument("--out", type=Path, help="default: the pretrained/ folder ($AECORE_PRETRAINED)")
    p.add_argument("--skip-existing", action="store_true", help="leave models that are already built")
    p = zsub.add_parser("list", help="the recipes")
    p = zsub.add_parser("table", help="the README's metrics table, from the metrics.json files")
    p.add_argument("--write", type=Path, metavar="README", help="replace the table between its markers in README")
    p.add_argument("--root", type=Path, help="default: the pretrained/ folder")
    return parser


def cmd_list(args: argparse.Namespace) -> int:
    from aecore.data import list_datasets
    from aecore.models import get_model_class, list_models
    from aecore.store import list_pretrained

    listing = {
        "models": [{"name": n, "description": get_model_class(n).description} for n in list_models()],
        "datasets": list_datasets(),
        "pretrained": list_pretrained(),
    }
    if args.json:
        print(json.dumps(listing, indent=2))
        return 0
    print("models:")
    for m in listing["models"]:
        print(f"  {m['name']:<18} {m['description']}")
    print("datasets:\n  " + ", ".join(listing["datasets"]))
    print("pretrained:\n  " + (", ".join(listing["pretrained"]) or "(none)"))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from aecore import distributed

    device = distributed.init(args.device)  # under torchrun: join the group, this process's device
    try:
        return _train(args, device)
    finally:
        distributed.cleanup()


def _train(args: argparse.Namespace, device: str | None) -> int:
    import torch

    import aecore.data as data_mod
    from aecore import distributed
    from aecore.evaluate import evaluate
    from aecore.models import build_model, get_model_class
    from aecore.store import check_replaceable, save_model
    from aecore.device import device_label
    from aecore.train import TrainConfig, Trainer

    get_model_class(args.model)  # an unknown name fails before any data is loaded
    check_replaceable(args.out)  # and a --out that saving would destroy, before any training
    config = TrainConfig.from_dict({
        "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
        "noise": args.noise, "labels": args.labels, "stage_epochs": args.stage_epochs,
    }, where="training option")
    if not 0.0 <= args.val_fraction < 1.0:
        raise ConfigError(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
    train = data_mod.load_dataset(args.dataset, "train", data_dir=args.data_dir)
    test = data_mod.load_dataset(args.dataset, "test", data_dir=args.data_dir)
    train, val = data_mod.split_off(train, args.val_fraction, seed=args.seed)
    overrides = _parse_set(args.set)
    overrides["input_shape"] = list(train.input_shape)
    if args.latent_dim is not None:
        overrides["latent_dim"] = args.latent_dim
    torch.manual_seed(args.seed)  # initial weights: the same command gives the same model
    model = build_model(args.model, overrides)
    main_process, world = distributed.is_main(), distributed.world_size()
    callbacks = [ProgressBar()] if main_process and not args.quiet else []
    trainer = Trainer(model, train, config=config, val=val, callbacks=callbacks, device=device,
                      checkpoint_dir=args.out, precision=args.precision)
    result = trainer.fit(resume=args.resume)
    if not main_process:  # rank 0 evaluates and writes; the others are done
        return 0
    metrics = evaluate(model, test, noise=config.noise, seed=args.seed)
    metrics["training"] = {"history": result.history, "seconds": round(result.seconds, 2),
                           "images_seen": result.images_seen, "precision": args.precision, "processes": world}
    trained_on = device_label(result.device) + (f", {world} processes (DDP, {distributed.backend()})" if world > 1 else "")
    save_model(model, args.out, dataset=args.dataset, classes=train.classes, recipe=config.to_dict(),
               metrics=metrics, trained_on=trained_on, half=args.half)
    print(f"saved {args.out}  test mse {metrics['mse']:.5f}  psnr {metrics['psnr']:.2f} dB")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import aecore.data as data_mod
    from aecore.evaluate import evaluate
    from aecore.store import resolve

    loaded = resolve(args.model, device=args.device)
    noise = args.noise if args.noise is not None else (loaded.info.get("recipe") or {}).get("noise")
    noise = None if noise in ("none", "") else noise
    dataset = args.dataset or loaded.info.get("dataset")
    if not dataset:
        raise ConfigError("the model does not record its dataset; pass --dataset")
    data = data_mod.load_dataset(dataset, args.split, data_dir=args.data_dir)
    metrics = evaluate(loaded.model, data, noise=noise, seed=args.seed)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        for key, value in metrics.items():
            print(f"{key:>20}: {value}")
    return 0


class ProgressBar:
    """tqdm bar per stage/epoch for the CLI; a trainer callback."""

    def __init__(self) -> None:
        self.bar = None

    def on_train_end(self, state) -> None:
        self._close()

    def on_batch_end(self, state) -> None:
        from tqdm import tqdm

        if self.bar is None:
            stage = f"{state.stage} " if state.n_stages > 1 else ""
            self.bar = tqdm(total=state.batches_per_epoch, desc=f"{stage}epoch {state.epoch + 1}/{state.epochs}",
                            unit="batch", leave=True, file=sys.stderr, dynamic_ncols=True)
        self.bar.update(state.batch - self.bar.n)
        if state.parts:
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in state.parts.items()}, refresh=False)

    def on_epoch_end(self, state) -> None:
        if self.bar is not None and state.val_parts:
            self.bar.set_postfix({"loss": f"{state.epoch_parts.get('loss', float('nan')):.4g}",
                                  "val": f"{state.val_parts['loss']:.4g}"})
        self._close()

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def cmd_zoo(args: argparse.Namespace) -> int:
    from aecore import zoo

    if args.zoo_command == "list":
        for full_id in zoo.recipe_ids():
            recipe = zoo.RECIPES[full_id.split("/", 1)[1]]
            print(f"{full_id:<34} {recipe.model:<18} {recipe.about}")
        return 0
    if args.zoo_command == "table":
        from aecore import zoo_table

        table = zoo_table.render(args.root)
        if args.write:
            zoo_table.write_into(args.write, table)
            print(f"updated the table in {args.write}")
        else:
            print(table)
        return 0
    built = zoo.build(only=args.only, root=args.out, data_dir=args.data_dir, device=args.device,
                      skip_existing=args.skip_existing, progress=lambda i: print(f"building {i}", file=sys.stderr))
    print(f"built {len(built)} model(s); manifest updated")
    return 0


COMMANDS = {"list": cmd_list, "train": cmd_train, "eval": cmd_eval, "zoo": cmd_zoo}


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="aecore: %(message)s", stream=sys.stderr)
    parser = build_parser()
    args = parser.parse_args(argv)
    if os.environ.get("RANK", "0") not in ("", "0"):  # torchrun: notices once, from rank 0; errors from every rank
        logging.getLogger("aecore").setLevel(logging.ERROR)
    try:
        return COMMANDS[args.command](args)
    except AecoreError as err:
        print(f"aecore: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # e.g. `aecore eval ... | head`
        sys.stderr.close()
        return 0
    except OSError as err:   # a path the system refuses (permissions, full disk, name too long)
        print(f"aecore: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("aecore: interrupted; the last completed epoch is checkpointed (use --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
