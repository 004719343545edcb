"""``spike train mlp | cnn | spikegpt``: one subcommand per model family, each with only its own
options (an option another family takes is refused by argparse, never ignored).

Under ``torchrun --nproc_per_node N`` every family trains data-parallel: ``--batch-size`` stays the
global batch (each rank takes a slice of about batch/N samples of every step), so the step, the
learning rate and the result are one process's with the same options, to float rounding."""
from __future__ import annotations

import argparse
from typing import Any

from spike.cli import HelpFormatter
from spike.cli.options import (add_target, refuse_overwriting, non_negative_float, non_negative_int, positive_float,
                               positive_int)
from spike.models.cnn.model import DATASET_PRESETS, PRESETS as CNN_PRESETS
from spike.models.cnn.train import train_cnn
from spike.models.spikegpt.model import PRESETS as SPIKEGPT_PRESETS
from spike.models.spikegpt.train import DEFAULT_ITERS, train_spikegpt
from spike.train.datasets import DATASETS
from spike.train.distributed import is_main_process
from spike.train.trainer import PRECISIONS
from spike.workflows import train_mlp

FAMILIES = {
    "mlp": "spiking MLP on digits (built in), MNIST or CIFAR-10",
    "cnn": "spiking CNN (VGG/ResNet presets), optionally with FTWT channel masks",
    "spikegpt": "SpikeGPT (spiking RWKV) language model on a text file or the built-in corpus",
}


def add_arguments(t: argparse.ArgumentParser) -> None:
    families = t.add_subparsers(dest="model", required=True, metavar="{" + ",".join(FAMILIES) + "}")
    parsers = {name: families.add_parser(name, help=text, description=text, formatter_class=HelpFormatter)
               for name, text in FAMILIES.items()}
    _add_snn(parsers["mlp"], steps=16, beta=0.9, from_init=False)
    parsers["mlp"].add_argument("--hidden", type=positive_int, nargs="+", default=[128], help="hidden layer widths")
    parsers["mlp"].add_argument("--lr", type=positive_float, default=5e-3, help="learning rate")
    _add_snn(parsers["cnn"], steps=4, beta=0.5, from_init=True)
    _add_cnn(parsers["cnn"])
    _add_spikegpt(parsers["spikegpt"])
    for p in parsers.values():
        p.add_argument("--seed", type=int, default=0, help="seed of weights, data order and encoding")
        p.add_argument("--resume", action="store_true",
                       help="continue from --out if it exists; other options than its own are refused (epochs "
                            "and iterations may grow); with its options and number of ranks the run ends with the "
                            "uninterrupted run's weights, bit for bit")
        p.add_argument("--accumulate", type=positive_int, default=1, metavar="K",
                       help="split every batch into K micro-batches and step once per batch: the batch's "
                            "gradient in K times less activation memory")
        p.add_argument("--precision", default="fp32", choices=PRECISIONS,
                       help="bf16: forward and loss under torch.autocast(bfloat16) on the model's device "
                            "(weights, optimizer and the neuron/WKV kernels' state stay float32); recorded in "
                            "the checkpoint, --resume refuses another")
        p.add_argument("--device", default="cpu",
                       help="cpu, cuda or cuda:N (cuda under torchrun: each rank takes cuda:LOCAL_RANK, and the "
                            "ranks talk over NCCL instead of gloo); input spikes are drawn on the CPU either way")
        p.add_argument("--quiet", action="store_true", help="no progress; the summary line only")


def _add_snn(p: argparse.ArgumentParser, *, steps: int, beta: float, from_init: bool) -> None:
    """The options mlp and cnn share; with ``from_init`` dataset, steps and beta default to an
    ``--init`` baseline's (else digits, ``steps``, ``beta``)."""

    def default(value: Any, text: str) -> tuple[Any, str]:
        if from_init:
            return None, f"{text} (default {value}; with --init: the baseline's)"
        return value, text

    p.add_argument("--out", required=True, help="checkpoint path (written atomically)")
    value, text = default("digits", "digits is built in; mnist and cifar10 read --data-root")
    p.add_argument("--dataset", default=value, choices=DATASETS, help=text)
    p.add_argument("--data-root", default=None, help="folder with the MNIST/CIFAR-10 files")
    p.add_argument("--epochs", type=positive_int, default=15, help="passes over the training split")
    value, text = default(steps, "simulation time steps per sample; with --target's synaptic delay the model "
                                 "runs its latency (delay x synaptic layers) more")
    p.add_argument("--steps", type=positive_int, default=value, help=text)
    add_target(p, None,
               "train for this target: its synaptic delay in every synaptic layer and, on a target with cores "
               "(loihi1, loihi2), rate-coded input and reset to zero in the step that fires, so `spike compile "
               "--target T --precision fixed` takes the checkpoint as it is; a conflicting --encoding/--reset is "
               "an error")
    p.add_argument("--encoding", default=None, choices=["direct", "rate", "latency"],
                   help="input encoding (default direct; rate with a --target that has cores)")
    value, text = default(beta, "LIF decay")
    p.add_argument("--beta", type=non_negative_float, default=value, help=text)
    p.add_argument("--reset", default=None, choices=["subtract", "zero", "none"],
                   help="neuron reset (default subtract; zero with a --target that has cores)")
    p.add_argument("--no-reset-delay", action="store_true",
                   help="reset in the step that spikes (Loihi's rule; needed by `spike compile --precision fixed`; "
                        "implied by a --target with cores)")
    p.add_argument("--batch-size", type=positive_int, default=64,
                   help="samples per optimizer step: the global batch, under torchrun split over the ranks "
                        "(same step and learning rate as one process)")


def _add_cnn(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lr", type=positive_float, default=None, help="learning rate (default 5e-3; 1e-3 with --ftwt)")
    p.add_argument("--preset", default=None, choices=sorted(CNN_PRESETS),
                   help="architecture (default by dataset: " +
                        ", ".join(f"{d} -> {n}" for d, n in sorted(DATASET_PRESETS.items())) + ")")
    p.add_argument("--ftwt", type=positive_float, default=None, metavar="R",
                   help="train FTWT channel masks with target mass ratio R (without: the unmasked baseline)")
    p.add_argument("--init", default=None, metavar="BASELINE.pt",
                   help="fine-tune this baseline checkpoint (its architecture, dataset, encoding and steps)")
    p.add_argument("--ftwt-mode", default="decoupled", choices=["decoupled", "joint"],
                   help="decoupled: the heads read a detached input; joint: the backbone also learns through them")
    p.add_argument("--ftwt-mass", default="spikes", choices=["spikes", "absmax"],
                   help="channel mass of the targets: spike count or the paper's max |activation|")
    p.add_argument("--ftwt-window", type=non_negative_int, default=0, help="steps the mask heads read (0: all)")
    p.add_argument("--head-lr", type=positive_float, default=2e-2, help="learning rate of the mask heads")
    p.add_argument("--channel-sparsity", type=non_negative_float, default=None,
                   help="weight of the channel-group spike sparsity penalty (default 0.7 for the baseline, 0 "
                        "with --ftwt)")


def _add_spikegpt(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="checkpoint path (written atomically)")
    p.add_argument("--size", default="tiny", choices=sorted(SPIKEGPT_PRESETS),
                   help="preset: tiny (4 x 64, ctx 128), 46m (12 x 512, ctx 1024), 216m (18 x 768, ctx 1024, "
                        "vocab 50277)")
    p.add_argument("--data", default=None,
                   help="UTF-8 text file (enwik8: its standard 90M/5M/5M byte split); default: the built-in "
                        "corpus (Python's documentation topics)")
    p.add_argument("--tokenizer", default=None,
                   help="tokenizers JSON file (e.g. GPT-NeoX 20B_tokenizer.json): token level instead of characters")
    p.add_argument("--no-spikes", action="store_true",
                   help="non-spiking RWKV of the same size (no LIF, no binary embedding)")
    p.add_argument("--ctx-len", type=positive_int, default=None, help="override the preset's context")
    p.add_argument("--layers", type=positive_int, default=None, help="override the preset's layers")
    p.add_argument("--embd", type=positive_int, default=None, help="override the preset's width")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="sequences per step (default: the preset's): the global batch, under torchrun split "
                        "over the ranks (same step and learning rate as one process)")
    p.add_argument("--iters", type=positive_int, default=None,
                   help=f"optimizer steps (default {DEFAULT_ITERS}, or unlimited with --minutes)")
    p.add_argument("--minutes", type=positive_float, default=None,
                   help="wall-clock budget: stop after it; the cosine follows the budget")
    p.add_argument("--lr", type=positive_float, default=6e-4, help="peak learning rate")
    p.add_argument("--lr-final", type=positive_float, default=1e-5, help="learning rate at the end of the cosine")
    p.add_argument("--dropout", type=non_negative_float, default=0.03, help="dropout probability")
    p.add_argument("--eval-every", type=positive_int, default=200,
                   help="steps per mini-epoch (validation + checkpoint after each)")
    p.add_argument("--eval-tokens", type=non_negative_int, default=32768,
                   help="validation tokens per check (0: the whole validation split)")
    p.add_argument("--threads", type=positive_int, default=None, help="torch/numba threads per process")


def run(args: argparse.Namespace) -> int:
    refuse_overwriting([getattr(args, "init", None), getattr(args, "data", None)], {"--out": args.out})
    if args.model == "cnn":
        _train_cnn(args)
    elif args.model == "spikegpt":
        train_spikegpt(**spikegpt_options(args))
    else:
        result = train_mlp(
            out=args.out, dataset=args.dataset, data_root=args.data_root, epochs=args.epochs, steps=args.steps,
            target=args.target, encoding=args.encoding, hidden=args.hidden, beta=args.beta, reset=args.reset,
            reset_delay=False if args.no_reset_delay else None, lr=args.lr, batch_size=args.batch_size,
            seed=args.seed, resume=args.resume, progress=not args.quiet, accumulate=args.accumulate,
            precision=args.precision, device=args.device,
        )
        if is_main_process():  # under torchrun: rank 0 speaks
            print(result["line"])
    return 0


def _train_cnn(args: argparse.Namespace) -> None:
    """``spike train cnn``: the unmasked baseline, or with ``--ftwt R`` FTWT masks (``--init`` a baseline)."""
    ftwt = None
    if args.ftwt is not None:
        ftwt = {"ratio": args.ftwt, "mode": args.ftwt_mode, "mass": args.ftwt_mass, "window": args.ftwt_window}
    overrides: dict[str, Any] = {}
    if args.beta is not None or args.init is None:
        overrides["beta"] = 0.5 if args.beta is None else args.beta
    if args.reset is not None:
        overrides["reset"] = args.reset
    if args.no_reset_delay:
        overrides["reset_delay"] = False
    if args.init is not None and args.preset is not None:
        raise ValueError(f"--preset {args.preset}: the architecture is the --init baseline's; leave --preset out")
    preset = args.preset or DATASET_PRESETS.get(args.dataset or "digits", "digits")
    result = train_cnn(
        out=args.out, dataset=args.dataset, data_root=args.data_root, preset=preset, model_kwargs=overrides,
        steps=args.steps, encoding=args.encoding, epochs=args.epochs,
        lr=args.lr if args.lr is not None else (1e-3 if ftwt else 5e-3),
        head_lr=args.head_lr, batch_size=args.batch_size, seed=args.seed, ftwt=ftwt, init=args.init,
        channel_sparsity=args.channel_sparsity, resume=args.resume, progress=not args.quiet,
        target=args.target, accumulate=args.accumulate, precision=args.precision, device=args.device,
    )
    cfg = result["config"]
    what = f"FTWT r={args.ftwt}" if ftwt else "unmasked"
    latency = result["model"].latency
    steps_text = f"{cfg['num_steps'] - latency} + {latency} steps" if latency else f"{cfg['num_steps']} steps"
    tgt = cfg.get("target")
    where = f", for {tgt['name']} ({tgt['synaptic_delay']}-step synaptic delay)" if tgt else ""
    if not is_main_process():
        return
    print(f"test accuracy {100 * result['accuracy']:.2f}% ({what} spiking CNN, {cfg['dataset']}, {steps_text}, "
          f"{cfg['encoding']['kind']} encoding{where}) -> {args.out}")


def spikegpt_options(args: argparse.Namespace) -> dict[str, Any]:
    """:func:`spike.models.spikegpt.train.train_spikegpt`'s keyword arguments from ``spike train spikegpt``'s."""
    return dict(
        out=args.out, size=args.size, data=args.data, tokenizer=args.tokenizer, spiking=not args.no_spikes,
        ctx_len=args.ctx_len, layers=args.layers, embd=args.embd, batch_size=args.batch_size, iters=args.iters,
        minutes=args.minutes, lr=args.lr, lr_final=args.lr_final, dropout=args.dropout,
        eval_every=args.eval_every, eval_tokens=args.eval_tokens, threads=args.threads, device=args.device,
        seed=args.seed, resume=args.resume, quiet=args.quiet, accumulate=args.accumulate,
        precision=args.precision,
    )
