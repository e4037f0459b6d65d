"""eSCN-style backbone: SO(2) convolutions over the radius graph, norms, gated feed-forward.

Node features are ``[N, (L+1)^2, 2, C]`` ((l, m)-major rows; class 0 natural
parity (-1)^l, class 1 pseudo parity (-1)^(l+1); see :mod:`pyscf_qhflow.nn.so3`).
Each interaction block is

    x = x + conv(norm(x))      # messages j -> i in the edge frame, summed with index_add_
    x = x + ffn(norm(x))       # gated per-l feed-forward

Edges follow :mod:`pyscf_qhflow.keys`: ``edge_index[0]`` = source j,
``edge_index[1]`` = target i.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .radial import ScalarMLP
from .so2 import FrameGate, SO2Linear, frame_rows
from .so3 import escn_l_of_row, escn_wigner_D, rotation_to_polar_axis

__all__ = ["EquivariantRMSNorm", "EscnLinear", "GatedFeedForward", "SO2Convolution",
           "InteractionBlock", "edge_frames"]


def edge_frames(vec: torch.Tensor, lmax: int, mmax: int | None = None) -> torch.Tensor:
    """Wigner-D [E, R', (L+1)^2] of rotations taking ``vec`` [E, 3] (e3nn frame) to +y.

    Rows in :func:`~pyscf_qhflow.nn.so2.frame_rows` order (|m| <= mmax only).
    """
    mmax = lmax if mmax is None else mmax
    d = escn_wigner_D(lmax, rotation_to_polar_axis(vec))  # [E, R, R]
    return d[:, frame_rows(lmax, mmax).to(vec.device)]


def rotate(d: torch.Tensor, x: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    """Into the frame: ``D x`` ([E, R', R] x [E, R, 2, C]); back: ``D^T y`` ([E, R', 2, C] -> [E, R, 2, C])."""
    if inverse:
        return torch.einsum("esr,escq->ercq", d, x)
    return torch.einsum("ers,escq->ercq", d, x)


class EquivariantRMSNorm(nn.Module):
    """RMS norm: natural scalars over channels, all other (l, class) parts jointly.

    Per-(l, class, channel) learned scales; no mean subtraction (equivariant).
    """

    def __init__(self, lmax: int, channels: int, eps: float = 1e-6):
        super().__init__()
        self.lmax, self.eps = lmax, eps
        self.weight = nn.Parameter(torch.ones(lmax + 1, 2, channels))
        self.register_buffer("l_of_row", escn_l_of_row(lmax), persistent=False)
        is_scalar = torch.zeros((lmax + 1) ** 2, 2, 1, dtype=torch.bool)
        is_scalar[0, 0] = True
        self.register_buffer("is_scalar", is_scalar, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sq = x.pow(2)  # [N, R, 2, C]
        s_sum = sq[:, 0, 0].sum(-1)  # [N]
        n_rest = max(x[0].numel() - x.shape[-1], 1)
        s_inv = torch.rsqrt(s_sum / x.shape[-1] + self.eps)  # [N]
        r_inv = torch.rsqrt((sq.flatten(1).sum(-1) - s_sum).clamp(min=0.0) / n_rest + self.eps)
        factor = torch.where(self.is_scalar, s_inv[:, None, None, None],
                             r_inv[:, None, None, None])  # [N, R, 2, 1]
        return x * factor * self.weight[self.l_of_row]


class EscnLinear(nn.Module):
    """Channel mixing per (l, class): ``[N, (L+1)^2, 2, c_in] -> [N, (L+1)^2, 2, c_out]``.

    A bias on the natural scalars only.
    """

    def __init__(self, lmax: int, c_in: int, c_out: int):
        super().__init__()
        self.lmax, self.c_in, self.c_out = lmax, c_in, c_out
        self.weight = nn.Parameter(torch.randn(lmax + 1, 2, c_in, c_out) / math.sqrt(c_in))
        self.bias = nn.Parameter(torch.zeros(c_out))
        self.register_buffer("l_of_row", escn_l_of_row(lmax), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.einsum("nrcq,rcqk->nrck", x, self.weight[self.l_of_row])
        y[:, 0, 0] = y[:, 0, 0] + self.bias
        return y

    def extra_repr(self) -> str:
        return f"lmax={self.lmax}, {self.c_in} -> {self.c_out} channels"


class GatedFeedForward(nn.Module):
    """Per-l feed-forward: mix channels, SiLU on natural scalars, sigmoid gates elsewhere, mix back."""

    def __init__(self, lmax: int, channels: int, hidden: int):
        super().__init__()
        self.lmax, self.hidden = lmax, hidden
        self.lin_in = EscnLinear(lmax, channels, hidden)
        self.gate = nn.Linear(channels, (lmax + 1) * 2 * hidden)
        self.lin_out = EscnLinear(lmax, hidden, channels)
        self.register_buffer("l_of_row", escn_l_of_row(lmax), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        h = self.lin_in(x)  # [N, R, 2, H]
        g = torch.sigmoid(self.gate(x[:, 0, 0])).reshape(n, self.lmax + 1, 2, self.hidden)
        out = h * g[:, self.l_of_row]
        out[:, 0, 0] = nn.functional.silu(h[:, 0, 0])
        return self.lin_out(out)


class SO2Convolution(nn.Module):
    """Edge messages in the edge frame, summed onto targets.

    rotate (x_j, x_i) -> SO(2) map -> x FiLM(edge scalars) -> frame gate -> SO(2) map
    -> rotate back -> x radial weights x envelope -> index_add_ over targets / avg_neighbors.
    """

    def __init__(self, lmax: int, mmax: int, channels: int, hidden: int, edge_dim: int,
                 avg_neighbors: float):
        super().__init__()
        self.channels, self.hidden = channels, hidden
        self.avg_neighbors = float(avg_neighbors)
        self.lmax, self.mmax = lmax, mmax
        self.so2_1 = SO2Linear(lmax, 2 * channels, hidden, mmax)
        self.gate = FrameGate(lmax, hidden, mmax)
        self.so2_2 = SO2Linear(lmax, hidden, channels, mmax)
        self.edge_mlp = ScalarMLP([edge_dim, hidden, hidden + channels])

    def message(self, x: torch.Tensor, src: torch.Tensor, dst: torch.Tensor, d: torch.Tensor,
                edge_scalars: torch.Tensor, envelope: torch.Tensor) -> torch.Tensor:
        xe = rotate(d, torch.cat([x[src], x[dst]], dim=-1))  # [E, R, 2, 2C]
        film, radial = self.edge_mlp(edge_scalars).split([self.hidden, self.channels], dim=-1)
        h = self.gate(self.so2_1(xe) * film[:, None, None, :])  # [E, R, 2, H]
        y = rotate(d, self.so2_2(h), inverse=True)  # [E, R, 2, C]
        return y * (radial * envelope[:, None])[:, None, None, :]

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, d: torch.Tensor,
                edge_scalars: torch.Tensor, envelope: torch.Tensor, chunk: int) -> torch.Tensor:
        out = torch.zeros_like(x)
        for start in range(0, edge_index.shape[1], chunk):
            sl = slice(start, start + chunk)
            src, dst = edge_index[0, sl], edge_index[1, sl]
            out.index_add_(0, dst, self.message(x, src, dst, d[sl], edge_scalars[sl], envelope[sl]))
        return out / self.avg_neighbors


class InteractionBlock(nn.Module):
    """``x + conv(norm(x))`` then ``x + ffn(norm(x))`` on ``[N, (L+1)^2, 2, C]``."""

    def __init__(self, lmax: int, mmax: int, channels: int, hidden: int, edge_dim: int,
                 avg_neighbors: float):
        super().__init__()
        self.norm1 = EquivariantRMSNorm(lmax, channels)
        self.conv = SO2Convolution(lmax, mmax, channels, hidden, edge_dim, avg_neighbors)
        self.norm2 = EquivariantRMSNorm(lmax, channels)
        self.ffn = GatedFeedForward(lmax, channels, hidden)

    def forward(self, x, edge_index, d, edge_scalars, envelope, chunk: int):
        x = x + self.conv(self.norm1(x), edge_index, d, edge_scalars, envelope, chunk)
        return x + self.ffn(self.norm2(x))
