"""Input gradient of a convolution from a sparse output gradient: ours against oneDNN.

``spike.kernels.conv_input_grad.input_grad`` (what ``spike.layers.SpikeConv2d``'s lookup path
runs where at most ``event_conv.SPARSE_GRAD_MAX_DENSITY`` of the gradient is nonzero) against
torch's ``convolution_backward`` for the input only (oneDNN on CPU), one thread each, interleaved,
each timed on the second of two back-to-back calls (right after the other, ours took 2.4 instead
of 1.9 ms), after a warm-up (compilation excluded), best and median of ``--repeats``.

Gradients timed, all of the shape that reaches the second convolution of the CNN of
``benchmarks/vs_training.py`` (``[T*B, 32, 14, 14]``, weight ``[32, 16, 3, 3]``, padding 1):

* ``cnn``: the real one, captured after two Adam steps of that CNN (ours, snnTorch's semantics):
  behind the LIF and the max pooling, a neuron has a gradient at a step only if it was its window's
  maximum then or later;
* ``random``: independent zeros at densities 0.1 .. 1.0 (where the kernel breaks even).

Each result is compared with a float64 reference (``max_abs_err_*``).

    python benchmarks/conv_input_grad.py [--repeats 20] [--json out.json] [--quick]

JSON: ``{"name": "conv_input_grad", "cnn": {"density", "ours_s", "onednn_s", "ratio", ...},
"random": [...], "break_even_density", "max_density_used", ...}`` with ``ratio`` = oneDNN / ours.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numba
import torch
import torch.nn.functional as F

import vs_training as VT
from spike.kernels import conv_input_grad
from spike.kernels.event_conv import SPARSE_GRAD_MAX_DENSITY
from spike.train.checkpoint import atomic_write_json

DENSITIES = (0.1, 0.3, 0.5, 0.7, 0.9, 1.0)


def cnn_gradient(cfg: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The output gradient of the CNN's second convolution and its weight, after two steps."""
    torch.manual_seed(0)
    net = VT.build("ours:snntorch", cfg)
    VT.gain_weights(net, 2.0)
    conv = net.model[1].module
    seen = {}
    hook = conv.register_full_backward_hook(lambda mod, gin, gout: seen.update(g=gout[0].detach().clone()))
    x, y = VT.make_batch(cfg)
    opt = torch.optim.Adam(net.model.parameters(), lr=1e-3)
    for _ in range(2):
        VT.train_step(net, opt, x, y)
    hook.remove()
    return seen["g"].contiguous(), conv.weight.detach().clone()


def _onednn(g: torch.Tensor, w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.ops.aten.convolution_backward(g, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
                                               [True, False, False])[0]


def compare(g: torch.Tensor, w: torch.Tensor, repeats: int) -> dict:
    """Ours and oneDNN on ``g`` (padding 1, 'same' size), interleaved; errors against float64."""
    n, _, h, wd = g.shape
    x = torch.empty(n, w.shape[1], h, wd)
    ref = F.grad.conv2d_input(x.shape, w.double(), g.double(), padding=1)
    ours = lambda: conv_input_grad.input_grad(g, w, (1, 1), (h, wd))  # noqa: E731
    onednn = lambda: _onednn(g, w, x)  # noqa: E731
    errs = {"max_abs_err_ours": (ours().double() - ref).abs().max().item(),
            "max_abs_err_onednn": (onednn().double() - ref).abs().max().item()}
    t_ours, t_dnn = [], []
    for _ in range(repeats):
        for fn, ts in ((ours, t_ours), (onednn, t_dnn)):
            fn()  # timed on the second of two back-to-back calls, as lif_train.py: not after the other
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
    res = {"density": (g != 0).float().mean().item(), "ours_s": min(t_ours), "onednn_s": min(t_dnn),
           "ours_median_s": statistics.median(t_ours), "onednn_median_s": statistics.median(t_dnn)}
    res["ratio"] = res["onednn_s"] / res["ours_s"]
    return res | errs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--json", type=str, default=None)
    ap.add_argument("--quick", action="store_true", help="the tiny CNN of vs_training --quick (smoke test)")
    args = ap.parse_args(argv)

    torch.set_num_threads(1)
    numba.set_num_threads(1)
    cfg = (VT.QUICK if args.quick else VT.WORKLOADS)["cnn"]
    g, w = cnn_gradient(cfg)
    out = {"name": "conv_input_grad", "quick": bool(args.quick), "threads": 1, "gradient_shape": list(g.shape),
           "weight_shape": list(w.shape), "max_density_used": SPARSE_GRAD_MAX_DENSITY,
           "cnn": compare(g, w, args.repeats), "random": []}
    gen = torch.Generator().manual_seed(1)
    for d in DENSITIES:
        gr = torch.randn(g.shape, generator=gen) * (torch.rand(g.shape, generator=gen) < d)
        out["random"].append(compare(gr, w, args.repeats))
    out["break_even_density"] = next((r["density"] for r in out["random"] if r["ratio"] < 1.0), None)
    for label, r in [("cnn", out["cnn"])] + [("random", r) for r in out["random"]]:
        print(f"{label:6s} density {r['density']:.2f}: ours {r['ours_s'] * 1e3:.2f} ms (median "
              f"{r['ours_median_s'] * 1e3:.2f}), oneDNN {r['onednn_s'] * 1e3:.2f} ms (median "
              f"{r['onednn_median_s'] * 1e3:.2f}) -> {r['ratio']:.2f}x; max |err| vs float64 ours "
              f"{r['max_abs_err_ours']:.1e}, oneDNN {r['max_abs_err_onednn']:.1e}")
    print(f"gradient {tuple(g.shape)}, weight {tuple(w.shape)}: the CNN's gradient {out['cnn']['ratio']:.2f}x; "
          f"first random density where oneDNN is faster: {out['break_even_density']}; SpikeConv2d uses ours up "
          f"to {SPARSE_GRAD_MAX_DENSITY}")
    if args.json:
        atomic_write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
