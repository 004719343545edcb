"""Lowering of the FTWT-masked conv layer :class:`spike.ftwt.GatedConv` (registered with the
torch.fx frontend when ``spike.models.cnn`` is imported).

``GatedConv`` is a leaf of the trace (it has a registered lowering) and becomes::

    source ──> Gate (head weight [C_out, C_in], bias, window) ──┐
       └────> Conv2d (no bias) -> BatchNorm ──────────────────> Population (the LIF)

``fold_batchnorm`` later folds the BatchNorm into the Conv2d. Without a gate the layer is a plain
Conv2d -> BatchNorm -> Population. The Gate is added before the Conv2d, so backends that run
nodes in graph order compute the mask before the projection that needs it. A ``GatedConv`` with
``delay`` gives its Conv2d that delay (the head still reads the undelayed input, as the Gate does).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch.fx as fx

from spike.compiler.frontends.torch_fx import (
    LoweringError, _Lowering, _module_where, _neuron_params, _np, _pair, lowers,
)
from spike.compiler.ir.nodes import BatchNorm, Conv2d, Gate, Population, conv_output_hw
from spike.ftwt import GatedConv


@lowers(GatedConv)
def lower_gated_conv(L: _Lowering, n: fx.Node, m: GatedConv, path: str) -> Any:
    conv, bn = m.conv.module, m.bn.module
    if _pair(conv.dilation) != (1, 1) or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        raise LoweringError(f"{_module_where(path, m)}: only dilation 1, numeric padding and padding_mode 'zeros' "
                            "can be lowered")
    if not bn.track_running_stats or bn.running_mean is None:
        raise LoweringError(f"{_module_where(path, m)}: its BatchNorm needs running statistics")
    src = L.source(n, n.args[0])
    in_shape = L.feature_shape(n.args[0])
    if len(in_shape) != 3 or in_shape[0] != conv.in_channels:
        raise LoweringError(f"{_module_where(path, m)}: expects input (C={conv.in_channels}, H, W), got {in_shape}")
    stride, padding, kernel = _pair(conv.stride), _pair(conv.padding), _pair(conv.kernel_size)
    shape = (conv.out_channels, *conv_output_hw(in_shape[1:], kernel, stride, padding))
    gate = None
    if m.gate is not None:
        g = m.gate
        gate = L.add(f"{path}.gate", Gate(shape=(conv.out_channels,), in_shape=tuple(in_shape), weight=_np(g.weight),
                                          bias=_np(g.bias), window=int(g.window)), [src])
    c = L.add(f"{path}.conv", Conv2d(shape=shape, in_shape=tuple(in_shape), weight=_np(conv.weight),
                                    bias=None if conv.bias is None else _np(conv.bias), stride=stride,
                                    padding=padding, groups=conv.groups, delay=int(m.delay)), [src])
    ch = conv.out_channels
    w = _np(bn.weight) if bn.affine else np.ones(ch, np.float32)
    b = _np(bn.bias) if bn.affine else np.zeros(ch, np.float32)
    bnode = L.add(f"{path}.bn", BatchNorm(shape=shape, weight=w, bias=b, running_mean=_np(bn.running_mean),
                                          running_var=_np(bn.running_var), eps=float(bn.eps)), [c])
    params = _neuron_params(m.lif, f"{path}.lif", shape)
    return L.add(path, Population(shape=shape, **params), [bnode] + ([gate] if gate else []))
