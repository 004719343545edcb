"""``spike train mlp | cnn | spikegpt``: one parser, the model family as its first argument."""
from __future__ import annotations

import argparse
from typing import Any

from spike.models.cnn.model import DATASET_PRESETS
from spike.models.cnn.train import train_cnn
from spike.models.spikegpt.model import PRESETS as SPIKEGPT_PRESETS
from spike.models.spikegpt.train import DEFAULT_ITERS, train_spikegpt
from spike.workflows import train_mlp

#: ``--batch-size``'s default (mlp, cnn); left at it, spikegpt trains with its preset's batch.
BATCH_SIZE = 64


def add_arguments(t: argparse.ArgumentParser) -> None:
    t.add_argument("model", choices=["mlp", "cnn", "spikegpt"], help="model family")
    t.add_argument("--dataset", default="digits", help="digits (built in), mnist or cifar10")
    t.add_argument("--data-root", default=None, help="folder with the MNIST/CIFAR-10 files")
    t.add_argument("--out", required=True, help="checkpoint path (written atomically)")
    t.add_argument("--epochs", type=int, default=15)
    t.add_argument("--steps", type=int, default=None,
                   help="simulation time steps per sample (mlp 16, cnn 4); with --target's synaptic delay the "
                        "model runs its latency (delay x synaptic layers) more")
    t.add_argument("--target", default=None,
                   help="train for this target (a name in hw_configs/ or a YAML path): its synaptic delay in "
                        "every synaptic layer and, on a target with cores (loihi1, loihi2), rate-coded input and "
                        "reset to zero in the step that fires, so `spike compile --target T --precision fixed` "
                        "takes the checkpoint as it is; a conflicting --encoding/--reset is an error")
    t.add_argument("--encoding", default=None, choices=["direct", "rate", "latency"],
                   help="input encoding (default direct; rate with a --target that has cores)")
    t.add_argument("--hidden", type=int, nargs="+", default=[128])
    t.add_argument("--beta", type=float, default=None, help="LIF decay (mlp 0.9, cnn 0.5)")
    t.add_argument("--reset", default=None, choices=["subtract", "zero", "none"],
                   help="neuron reset (default subtract; zero with a --target that has cores)")
    t.add_argument("--no-reset-delay", action="store_true",
                   help="reset in the step that spikes (Loihi's rule; needed for --precision fixed; implied by "
                        "a --target with cores)")
    t.add_argument("--lr", type=float, default=None, help="default 5e-3 (1e-3 for cnn --ftwt)")
    t.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--resume", action="store_true", help="continue from --out if it exists")
    t.add_argument("--preset", default=None,
                   help="cnn: digits, mnist, digits_resnet, vgg16, resnet20, resnet56 (spike.models.cnn.model.PRESETS; "
                        "default by dataset: digits, mnist, vgg16 for cifar10)")
    t.add_argument("--ftwt", type=float, default=None, metavar="R",
                   help="cnn: train FTWT channel masks with target mass ratio R (without: the unmasked baseline)")
    t.add_argument("--init", default=None, metavar="BASELINE.pt", help="cnn: start from this baseline checkpoint")
    t.add_argument("--ftwt-mode", default="decoupled", choices=["decoupled", "joint"])
    t.add_argument("--ftwt-mass", default="spikes", choices=["spikes", "absmax"],
                   help="channel mass of the targets: spike count (default) or the paper's max |activation|")
    t.add_argument("--ftwt-window", type=int, default=0, help="steps the mask heads read (0: all)")
    t.add_argument("--head-lr", type=float, default=2e-2, help="cnn: learning rate of the mask heads")
    t.add_argument("--channel-sparsity", type=float, default=None,
                   help="cnn: weight of the channel-group spike sparsity penalty (default 0.7 for the "
                        "baseline, 0 with --ftwt)")
    t.add_argument("--quiet", action="store_true")
    # spikegpt (--out, --lr, --batch-size, --seed, --resume and --quiet are the ones above)
    t.add_argument("--size", default="tiny", choices=sorted(SPIKEGPT_PRESETS),
                   help="spikegpt preset: tiny (4 x 64, ctx 128), 46m (12 x 512, ctx 1024), "
                        "216m (18 x 768, ctx 1024, vocab 50277)")
    t.add_argument("--data", default=None,
                   help="spikegpt: UTF-8 text file (enwik8: its standard 90M/5M/5M byte split); "
                        "default: the built-in corpus (Python's documentation topics)")
    t.add_argument("--tokenizer", default=None,
                   help="spikegpt: tokenizers JSON file (e.g. GPT-NeoX 20B_tokenizer.json): token level "
                        "instead of characters")
    t.add_argument("--no-spikes", action="store_true",
                   help="spikegpt: non-spiking RWKV of the same size (no LIF, no binary embedding)")
    t.add_argument("--ctx-len", type=int, default=None, help="spikegpt: override the preset's context")
    t.add_argument("--layers", type=int, default=None, help="spikegpt: override the preset's layers")
    t.add_argument("--embd", type=int, default=None, help="spikegpt: override the preset's width")
    t.add_argument("--iters", type=int, default=None,
                   help=f"spikegpt: optimizer steps (default {DEFAULT_ITERS}, or unlimited with --minutes)")
    t.add_argument("--minutes", type=float, default=None,
                   help="spikegpt: wall-clock budget: stop after it; the cosine follows the budget")
    t.add_argument("--lr-final", type=float, default=1e-5)
    t.add_argument("--dropout", type=float, default=0.03)
    t.add_argument("--eval-every", type=int, default=200,
                   help="spikegpt: steps per mini-epoch (validation + checkpoint after each)")
    t.add_argument("--eval-tokens", type=int, default=32768,
                   help="spikegpt: validation tokens per check (0: the whole validation split)")
    t.add_argument("--threads", type=int, default=None, help="torch/numba threads per process")
    t.add_argument("--device", default="cpu",
                   help="cpu or cuda (under torchrun: each rank takes cuda:LOCAL_RANK)")


def run(args: argparse.Namespace) -> int:
    if args.model == "cnn":
        _train_cnn(args)
        return 0
    if args.model == "spikegpt":
        if args.target is not None:
            raise ValueError("--target: spike train spikegpt trains for host targets only (SpikeGPT is mostly "
                             "host ops no neuromorphic core runs); leave --target out")
        train_spikegpt(**spikegpt_options(args))
        return 0
    result = train_mlp(
        out=args.out, dataset=args.dataset, data_root=args.data_root, epochs=args.epochs, steps=args.steps,
        target=args.target, encoding=args.encoding, hidden=args.hidden, beta=args.beta, reset=args.reset,
        reset_delay=False if args.no_reset_delay else None, lr=args.lr, batch_size=args.batch_size,
        seed=args.seed, resume=args.resume, progress=not args.quiet,
    )
    print(result["line"])
    return 0


def _train_cnn(args: argparse.Namespace) -> None:
    """``spike train cnn``: the unmasked baseline, or with ``--ftwt R`` FTWT masks (``--init`` a baseline)."""
    ftwt = None
    if args.ftwt is not None:
        ftwt = {"ratio": args.ftwt, "mode": args.ftwt_mode, "mass": args.ftwt_mass, "window": args.ftwt_window}
    overrides: dict[str, Any] = {}
    if args.beta is not None:
        overrides["beta"] = args.beta
    if args.init is None:
        overrides.setdefault("beta", 0.5)
    if args.reset is not None:
        overrides["reset"] = args.reset
    if args.no_reset_delay:
        overrides["reset_delay"] = False
    preset = args.preset or DATASET_PRESETS.get(args.dataset, "digits")
    result = train_cnn(
        out=args.out, dataset=args.dataset, data_root=args.data_root, preset=preset, model_kwargs=overrides,
        steps=args.steps if args.steps is not None else 4, encoding=args.encoding, epochs=args.epochs,
        lr=args.lr if args.lr is not None else (1e-3 if ftwt else 5e-3),
        head_lr=args.head_lr, batch_size=args.batch_size, seed=args.seed, ftwt=ftwt, init=args.init,
        channel_sparsity=args.channel_sparsity, resume=args.resume, progress=not args.quiet,
        target=args.target,
    )
    cfg = result["config"]
    what = f"FTWT r={args.ftwt}" if ftwt else "unmasked"
    latency = result["model"].latency
    steps_text = f"{cfg['num_steps'] - latency} + {latency} steps" if latency else f"{cfg['num_steps']} steps"
    tgt = cfg.get("target")
    where = f", for {tgt['name']} ({tgt['synaptic_delay']}-step synaptic delay)" if tgt else ""
    print(f"test accuracy {100 * result['accuracy']:.2f}% ({what} spiking CNN, {cfg['dataset']}, {steps_text}, "
          f"{cfg['encoding']['kind']} encoding{where}) -> {args.out}")


def spikegpt_options(args: argparse.Namespace) -> dict[str, Any]:
    """:func:`spike.models.spikegpt.train.train_spikegpt`'s keyword arguments from ``spike train spikegpt``'s
    options: ``--batch-size`` left at the shared default means the preset's batch, ``--lr`` None 6e-4."""
    return dict(
        out=args.out, size=args.size, data=args.data, tokenizer=args.tokenizer, spiking=not args.no_spikes,
        ctx_len=args.ctx_len, layers=args.layers, embd=args.embd,
        batch_size=None if args.batch_size == BATCH_SIZE else args.batch_size, iters=args.iters,
        minutes=args.minutes, lr=args.lr, lr_final=args.lr_final, dropout=args.dropout,
        eval_every=args.eval_every, eval_tokens=args.eval_tokens, threads=args.threads, device=args.device,
        seed=args.seed, resume=args.resume, quiet=args.quiet,
    )
