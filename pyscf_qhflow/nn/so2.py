"""SO(2) linear maps in an edge frame (eSCN), with natural and pseudo parity classes.

After rotating features so the edge points along e3nn's polar axis y, a tensor
product with Y(r_ij) only involves Y's m = 0 component, so it reduces to
independent maps per |m| (Passaro & Zitnick 2023).  For m > 0 the (+m, -m)
pair is mapped by ``[[W1, -W2], [W2, W1]]``: W1 collects the paths
``l_in (x) l_f -> l_out`` with l_in + l_f + l_out even, W2 those with an odd
sum (zero for m = 0).  The output parity is ``p_in (-1)^l_f``, so W1 keeps a
feature's class (natural (-1)^l or pseudo (-1)^(l+1)) and W2 swaps it:

    out_+[c] = W1[c] a_+[c]   - W2[c] a_-[1-c]
    out_-[c] = W2[c] a_+[1-c] + W1[c] a_-[c]

A mirror that contains the edge flips the sign of natural -m and pseudo +m
components; the maps above commute with it (checked by the reflection tests).
Features are ``[E, (L+1)^2, 2, C]`` (see :mod:`pyscf_qhflow.nn.so3`).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .so3 import escn_l_of_row

__all__ = ["frame_rows", "SO2Linear", "FrameGate"]


def frame_rows(lmax: int, mmax: int) -> torch.Tensor:
    """eSCN rows in the m-major frame order used by :class:`SO2Linear`.

    ``[m=0: l=0..L] + for m = 1..mmax: [+m: l=m..L] + [-m: l=m..L]``; rows with
    |m| > mmax are dropped.  Edge-frame Wigner-D matrices are built with their
    rows in this order, so rotating features lands directly in this layout.
    """
    rows = [l * l + l for l in range(lmax + 1)]
    for m in range(1, min(mmax, lmax) + 1):
        rows += [l * l + l + m for l in range(m, lmax + 1)]
        rows += [l * l + l - m for l in range(m, lmax + 1)]
    return torch.tensor(rows, dtype=torch.long)


class SO2Linear(nn.Module):
    """SO(2)-equivariant, parity-aware linear map in the edge frame.

    ``[E, R', 2, c_in] -> [E, R', 2, c_out]`` with rows in :func:`frame_rows`
    order (R' rows, |m| <= mmax).  Per m one matrix product: the (+m, -m)
    segment splits into two groups that do not mix, (+m natural, -m pseudo)
    and (+m pseudo, -m natural), each mapped by one matrix product.
    """

    def __init__(self, lmax: int, c_in: int, c_out: int, mmax: int | None = None):
        super().__init__()
        mmax = lmax if mmax is None else min(int(mmax), lmax)
        self.lmax, self.mmax, self.c_in, self.c_out = lmax, mmax, c_in, c_out
        n0 = lmax + 1
        self.w0 = nn.Parameter(torch.randn(2, n0, c_in, n0, c_out) / math.sqrt(n0 * c_in))
        self.w1 = nn.ParameterList()
        self.w2 = nn.ParameterList()
        for m in range(1, mmax + 1):
            n = lmax + 1 - m
            scale = 1.0 / math.sqrt(2 * n * c_in)
            self.w1.append(nn.Parameter(torch.randn(2, n, c_in, n, c_out) * scale))
            self.w2.append(nn.Parameter(torch.randn(2, n, c_in, n, c_out) * scale))

    def _matrices(self, m: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(MA, MB): (a_+nat, a_-pse) -> (o_+nat, o_-pse) and (a_+pse, a_-nat) -> (o_+pse, o_-nat)."""
        w1, w2 = self.w1[m - 1], self.w2[m - 1]  # [2, n, ci, n, co]
        n = w1.shape[1]
        k, q = n * self.c_in, n * self.c_out
        w1, w2 = w1.reshape(2, k, q), w2.reshape(2, k, q)
        ma = torch.cat([torch.cat([w1[0], w2[1]], 1), torch.cat([-w2[0], w1[1]], 1)], 0)
        mb = torch.cat([torch.cat([w1[1], w2[0]], 1), torch.cat([-w2[1], w1[0]], 1)], 0)
        return ma, mb  # [2k, 2q] each

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = x.shape[0]  # x: [E, R', 2, c_in], frame_rows order
        n0, ci, co = self.lmax + 1, self.c_in, self.c_out
        # One unbind and one split instead of many slices: the backward of a
        # slice allocates a zero tensor of the whole input, that of split one cat.
        sizes = [n0] + [self.lmax + 1 - m for m in range(1, self.mmax + 1) for _ in (0, 1)]
        nat, pse = (part.split(sizes, dim=1) for part in x.unbind(2))  # [E, n, ci] segments
        w0 = self.w0.reshape(2, n0 * ci, n0 * co)
        outs = [torch.stack([nat[0].reshape(e, -1) @ w0[0], pse[0].reshape(e, -1) @ w0[1]],
                            dim=2).reshape(e, n0, co, 2).transpose(2, 3)]  # [E, n0, 2, co]
        for m in range(1, self.mmax + 1):
            n = self.lmax + 1 - m
            plus, minus = 2 * m - 1, 2 * m  # segment indices of +m and -m rows
            ma, mb = self._matrices(m)
            a = torch.cat([nat[plus], pse[minus]], 1).reshape(e, -1) @ ma
            b = torch.cat([pse[plus], nat[minus]], 1).reshape(e, -1) @ mb
            a, b = a.reshape(e, 2, n, co), b.reshape(e, 2, n, co)
            outs.append(torch.stack([a[:, 0], b[:, 0]], dim=2))  # +m rows: [E, n, 2, co]
            outs.append(torch.stack([b[:, 1], a[:, 1]], dim=2))  # -m rows
        return torch.cat(outs, dim=1)  # [E, R', 2, c_out]

    def extra_repr(self) -> str:
        r = len(frame_rows(self.lmax, self.mmax))
        return f"lmax={self.lmax}, mmax={self.mmax}, [E, {r}, 2, {self.c_in}] -> [E, {r}, 2, {self.c_out}]"


class FrameGate(nn.Module):
    """Gated nonlinearity in the edge frame (rows in :func:`frame_rows` order).

    The m = 0 natural components of every l are invariant under rotations
    and reflections once the frame is fixed by the edge (a flip y -> -y gives
    (-1)^l, cancelled by the natural parity), so they drive sigmoid gates for
    every (l, class, channel); the natural l = 0 channels get SiLU instead.
    """

    def __init__(self, lmax: int, channels: int, mmax: int | None = None):
        super().__init__()
        mmax = lmax if mmax is None else min(int(mmax), lmax)
        self.lmax, self.channels = lmax, channels
        self.lin = nn.Linear((lmax + 1) * channels, (lmax + 1) * 2 * channels)
        self.register_buffer("l_of_row", escn_l_of_row(lmax)[frame_rows(lmax, mmax)],
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = x.shape[0]  # x: [E, R', 2, C]
        inv = x[:, :self.lmax + 1, 0, :].reshape(e, -1)  # m = 0 natural, [E, (L+1) C]
        gate = torch.sigmoid(self.lin(inv)).reshape(e, self.lmax + 1, 2, self.channels)
        out = x * gate[:, self.l_of_row]  # [E, R', 2, C]
        out[:, 0, 0] = nn.functional.silu(x[:, 0, 0])
        return out
