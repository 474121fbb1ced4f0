"""`aecore` command line: list, train, eval.

Every expected failure (unknown model, missing data, bad flag value, corrupt file, a path the system
refuses, a model too large for the memory) is one line on stderr and exit code 2; no traceback. Input
is guarded where it enters (`_parse_set`, the argparse types, the NUL check in `main`, the store's and
the trainer's file readers); `one_line` in `main` is the last guard: whitespace and newlines collapse
to one space, and a line over MAX_MESSAGE characters loses its middle. `aecore train` also runs under torchrun
(DDP): every process trains, rank 0 alone prints progress, evaluates and saves (`aecore.pipeline`, as
the zoo build and the app's training jobs save theirs).
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


MAX_MESSAGE = 2000        # characters of an error line; longer ones lose their middle
MAX_SET_VALUE = 10_000    # characters of a --set value (a config value is a number, a word or a short list)


def one_line(message: str) -> str:
    """`message` as one line of at most MAX_MESSAGE characters: newlines and runs of whitespace become
    one space (the last guard of the one-line promise; the sources keep their own messages short)."""
    text = " ".join(str(message).split())
    if len(text) > MAX_MESSAGE:
        text = f"{text[:MAX_MESSAGE - 520]} ... ({len(text):,} characters in all) ... {text[-500:]}"
    return text


def _fail(message: str) -> None:
    print(f"aecore: error: {one_line(message)}", file=sys.stderr)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints usage too)
        see = f"aecore {self.prog.split()[-1]} --help" if " " in self.prog else "aecore --help"
        self.exit(EXIT_USAGE, f"aecore: error: {one_line(message)} (see '{see}')\n")


def _int_arg(text: str) -> int:
    """argparse type: an integer (the bad value quoted short: a flag may get 5,000 digits)."""
    try:
        return int(text)
    except ValueError:
        from aecore.config import short_repr

        raise argparse.ArgumentTypeError(f"expected an integer, got {short_repr(text, 40)}") from None


def _float_arg(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        from aecore.config import short_repr

        raise argparse.ArgumentTypeError(f"expected a number, got {short_repr(text, 40)}") from None


def _parse_set(items: Sequence[str]) -> dict[str, Any]:
    """--set key=value: value parsed as JSON when it is JSON, else a string. Refused: a key that is
    not a field name, a value longer than MAX_SET_VALUE, and JSON that Python cannot hold (nested
    too deeply, an integer of more than 4,300 digits)."""
    from aecore.config import short_repr

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ConfigError(f"--set {short_repr(item)}: expected key=value, e.g. --set hidden=[256,64]")
        if not key.isidentifier() or len(key) > 100:
            raise ConfigError(f"--set {short_repr(key)}: not a config field name (letters, digits and _)")
        if len(raw) > MAX_SET_VALUE:
            raise ConfigError(f"--set {key}: the value is {len(raw):,} characters long; "
                              f"a config value has at most {MAX_SET_VALUE:,}")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
        except RecursionError:
            raise ConfigError(f"--set {key}: the value is nested too deeply") from None
        except ValueError as err:        # an integer beyond int_max_str_digits
            raise ConfigError(f"--set {key}: the value cannot be read ({str(err).split(';')[0]})") from None
    return out


def _check_folder_option(flag: str, path: Path | None) -> None:
    """A folder option (--data-dir, --root) that names an existing file, not a folder, is refused."""
    if path is not None and path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {path} is a file; it must be a folder")


def _check_device(name: Any):
    """The torch.device `name` means (None: the best available), refused now when it is unknown or absent
    (a CUDA index beyond the devices present would otherwise fail deep inside torch)."""
    from aecore.device import pick_device

    device = pick_device(name)
    if device.type == "cuda" and device.index is not None:
        import torch

        count = torch.cuda.device_count()
        if device.index >= count:
            raise ConfigError(f"device {str(name)!r} asked for, but this machine has {count} CUDA device(s) "
                              f"(cuda:0 to cuda:{count - 1})")
    return device


def _check_out(path: Path) -> None:
    """--out must be creatable: its nearest existing ancestor must be a folder (a file there would
    only fail at the first checkpoint, after a whole epoch of training)."""
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"--out {path}: {parent} is a file, so no folder can be made inside it")
            return


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="aecore", description="Autoencoder lab: train, evaluate and inspect autoencoders.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("list", help="models, datasets and pretrained ids")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("train", help="train a model and save it to --out")
    p.add_argument("--model", required=True)
    p.add_argument("--dataset", required=True, help="mnist, fashion-mnist, cifar10, digits, folder:PATH, ...")
    p.add_argument("--out", required=True, type=Path, help="model folder to write")
    p.add_argument("--epochs", type=_int_arg, default=10)
    p.add_argument("--batch-size", type=_int_arg, default=128)
    p.add_argument("--lr", type=_float_arg, default=1e-3)
    p.add_argument("--latent-dim", type=_int_arg)
    p.add_argument("--noise", help="gaussian:SIGMA | masking:NU | saltpepper:NU (denoising)")
    p.add_argument("--labels", type=_int_arg, help="semi-supervised: keep N labels (class-balanced)")
    p.add_argument("--stage-epochs", type=_int_arg, help="epochs per greedy pretraining stage")
    p.add_argument("--seed", type=_int_arg, default=0)
    p.add_argument("--val-fraction", type=_float_arg, default=0.05, help="held out of the training split")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="model config field")
    p.add_argument("--data-dir", type=Path)
    p.add_argument("--device", help="cpu | cuda | mps (default: best available); under torchrun: cuda or cpu")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="bf16: bfloat16 autocast for forward passes (CUDA, or a CPU with AVX512-BF16 or AMX)")
    p.add_argument("--resume", action="store_true", help="continue from --out's last checkpoint")
    p.add_argument("--half", action="store_true", help="store weights in float16")
    p.add_argument("--quiet", action="store_true")

    p = sub.add_parser("eval", help="test metrics of a model folder or pretrained id")
    p.add_argument("model", help="model folder or pretrained id (e.g. mnist/ae-d32)")
    p.add_argument("--dataset", help="default: the dataset the model was trained on")
    p.add_argument("--split", default="test", choices=["train", "test"])
    p.add_argument("--noise", help="corrupt inputs first (denoising metrics); default: the noise the model "
                                   "was trained with, 'none' for clean inputs")
    p.add_argument("--seed", type=_int_arg, default=0)
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
    p = zsub.add_parser("frontier", help="the sparsity frontier (MSE against L0) of the shipped models, "
                                         "into pretrained/<dataset>/frontier.json")
    p.add_argument("--dataset", action="append", default=[], help="default: every dataset with a sparse or ranked model")
    p.add_argument("--data-dir", type=Path)
    p.add_argument("--device")
    p.add_argument("--epochs", type=_int_arg, default=5, help="epochs of each swept variant at most (default 5)")
    p.add_argument("--no-sweep", action="store_true", help="only the shipped models and PCA: train nothing")
    p.add_argument("--vary", action="append", default=[], metavar="ID:FIELD=V1,V2,...",
                   help="train a shipped model's variants at these values of one config field (e.g. a top-k "
                        "model's k), instead of the sweep its traits imply; ID as in --only")
    p.add_argument("--out", type=Path, help="default: the pretrained/ folder ($AECORE_PRETRAINED)")
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
    from aecore.train import check_batch_split

    # before the group exists: an error raised inside one can abort a process while gloo tears down
    check_batch_split(args.batch_size, distributed.launched_world_size())
    device = distributed.init(args.device)  # under torchrun: join the group, this process's device
    try:
        return _train(args, device)
    finally:
        distributed.cleanup()


def _train(args: argparse.Namespace, device: str | None) -> int:
    import aecore.data as data_mod
    from aecore import distributed, pipeline
    from aecore.models import get_model_class, make_config
    from aecore.models.registry import check_fits_memory
    from aecore.store import check_replaceable
    from aecore.train import TrainConfig, Trainer

    get_model_class(args.model)  # an unknown name fails before any data is loaded
    check_replaceable(args.out)  # and a --out that saving would destroy, before any training
    _check_out(args.out)
    _check_folder_option("--data-dir", args.data_dir)
    config = TrainConfig.from_dict({
        "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
        "noise": args.noise, "labels": args.labels, "stage_epochs": args.stage_epochs,
    }, where="training option")
    if not 0.0 <= args.val_fraction < 1.0:
        raise ConfigError(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
    overrides = _parse_set(args.set)       # bad --set values fail before any data is loaded
    on = _check_device(device)             # and an unknown or missing device
    train = data_mod.load_dataset(args.dataset, "train", data_dir=args.data_dir)
    test = data_mod.load_dataset(args.dataset, "test", data_dir=args.data_dir)
    train, val = data_mod.split_off(train, args.val_fraction, seed=args.seed)
    overrides["input_shape"] = list(train.input_shape)
    if args.latent_dim is not None:
        overrides["latent_dim"] = args.latent_dim
    model_config = make_config(args.model, overrides)
    # Refuse a model this machine cannot train before allocating it (the kernel would kill the process).
    check_fits_memory(args.model, model_config, batch_size=min(config.batch_size, max(len(train), 1)), device=on)
    model = pipeline.initial_model(args.model, model_config, seed=args.seed)  # the same command, the same model
    if args.stage_epochs is not None and len(model.stages() if hasattr(model, "stages") else ["train"]) < 2:
        raise ConfigError(f"--stage-epochs: model {args.model!r} trains in one stage (no greedy pretraining)")
    main_process = distributed.is_main()
    callbacks = [ProgressBar()] if main_process and not args.quiet else []
    trainer = Trainer(model, train, config=config, val=val, callbacks=callbacks, device=device,
                      checkpoint_dir=args.out, precision=args.precision)
    try:
        result = trainer.fit(resume=args.resume)
    finally:                      # a failure mid-epoch: end the bar's line, so the error starts its own
        for callback in callbacks:
            callback._close()
    if not main_process:  # rank 0 evaluates and writes; the others are done
        return 0
    pipeline.round_to_stored(model, half=args.half)
    metrics, _ = pipeline.measure(model, test, noise=config.noise, codes=False)
    metrics = pipeline.save_trained(model, args.out, result=result, metrics=metrics, dataset=args.dataset,
                                    classes=train.classes, half=args.half, precision=args.precision,
                                    recipe=pipeline.recipe_record(config, val_fraction=args.val_fraction))
    print(f"saved {args.out}  test mse {metrics['mse']:.5f}  psnr {metrics['psnr']:.2f} dB")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import aecore.data as data_mod
    from aecore.evaluate import evaluate
    from aecore.store import resolve

    _check_folder_option("--data-dir", args.data_dir)
    _check_device(args.device)
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

        if args.root is not None and not args.root.is_dir():
            raise ConfigError(f"--root {args.root} is not a folder (the pretrained/ folder holding manifest.json)")
        table = zoo_table.render(args.root)
        if args.write:
            zoo_table.write_into(args.write, table)
            print(f"updated the table in {args.write}")
        else:
            print(table)
        return 0
    _check_folder_option("--data-dir", args.data_dir)
    _check_device(args.device)
    if args.zoo_command == "frontier":
        return _frontier(args)
    built = zoo.build(only=args.only, root=args.out, data_dir=args.data_dir, device=args.device,
                      skip_existing=args.skip_existing, progress=lambda i: print(f"building {i}", file=sys.stderr))
    print(f"built {len(built)} model(s); manifest updated")
    return 0


def _frontier(args: argparse.Namespace) -> int:
    import time

    import aecore.data as data_mod
    from aecore.lab import frontier
    from aecore.paths import pretrained_dir
    from aecore.store import list_pretrained

    root = args.out or pretrained_dir()
    if args.epochs < 1:
        raise ConfigError(f"--epochs must be at least 1, got {args.epochs}")
    vary, shipped = {}, list_pretrained(root)
    for item in args.vary:
        ref, sep, setting = item.partition(":")
        field_name, sep2, values = setting.partition("=")
        if not (sep and sep2 and ref and field_name and values):
            raise ConfigError(f"--vary {item[:100]!r}: expected ID:FIELD=V1,V2,... (e.g. topk-ae:k=6,12,25,50)")
        if not any(ref == i or i.endswith("/" + ref) for i in shipped):
            raise ConfigError(f"--vary {ref[:100]!r}: no such pretrained model")
        parsed = [_parse_set([f"{field_name}={v}"]) for v in values.split(",")]
        key = next(iter(parsed[0]))
        vary[ref] = (key, [p[key] for p in parsed])
    datasets = args.dataset or frontier.datasets_with_frontier(root)
    for dataset in datasets:
        start = time.perf_counter()
        train = data_mod.load_dataset(dataset, "train", data_dir=args.data_dir)
        if train.split == "test":
            raise ConfigError(f"{dataset}: only the bundled test split was found; the frontier's PCA and variants "
                              "train on the full training split (pass --data-dir)")
        test = data_mod.load_dataset(dataset, "test", data_dir=args.data_dir)
        record = frontier.build(dataset, train, test, root=root, epochs=args.epochs, device=args.device,
                                sweep=not args.no_sweep, vary=vary,
                                progress=lambda text: print(f"frontier: {text}", file=sys.stderr))
        file = frontier.write(record, root)
        points = sum(len(s["points"]) for s in record["series"])
        print(f"wrote {file}: {len(record['series'])} series, {points} points ({time.perf_counter() - start:.0f} s)")
    return 0


COMMANDS = {"list": cmd_list, "train": cmd_train, "eval": cmd_eval, "zoo": cmd_zoo}


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="aecore: %(message)s", stream=sys.stderr)
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    for i, arg in enumerate(argv, 1):  # only a caller in Python can pass one (argv from a shell cannot)
        if "\0" in str(arg):
            parser.error(f"argument {i} contains a NUL character")
    args = parser.parse_args(argv)
    if os.environ.get("RANK", "0") not in ("", "0"):  # torchrun: notices once, from rank 0; errors from every rank
        logging.getLogger("aecore").setLevel(logging.ERROR)
    try:
        return COMMANDS[args.command](args)
    except AecoreError as err:
        _fail(str(err))
        return EXIT_USAGE
    except BrokenPipeError:  # e.g. `aecore eval ... | head`
        sys.stderr.close()
        return 0
    except OSError as err:   # a path the system refuses (permissions, full disk, name too long)
        _fail(str(err))
        return EXIT_USAGE
    except (MemoryError, RuntimeError) as err:   # the estimate let it through, but memory ran out all the same
        if not isinstance(err, MemoryError) and type(err).__name__ != "OutOfMemoryError":   # torch's (CUDA)
            raise
        _fail("out of memory; make the model or --batch-size smaller")
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("aecore: interrupted; the last completed epoch is checkpointed (use --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
