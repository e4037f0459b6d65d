"""Two-stage pair update for the off-site blocks, over ``pair_index`` (up to the pair cutoff).

Stage I (SO(2) pair encoder): both atoms' features (and, optionally, the
H_init and flow-state off-site blocks written in irreps) are rotated into the
pair frame, mapped by two SO(2) linear maps with a FiLM from the pair scalars
(radial basis, both atoms' scalars and elements) and a frame gate, and rotated
back.  Nothing is aggregated to nodes.

Stage II (CG refinement): a channel-wise ('uuu') e3nn tensor product of the
two atoms' l <= l_block features with per-pair weights from a radial MLP.

Both stages run on the same pair list, independent of the backbone edges;
the block readout linearly fuses them (sum of their linear maps) with
per-pair gates.  Pairs are processed in chunks of ``pair_chunk``.
"""
from __future__ import annotations

import torch
from e3nn import o3
from torch import nn

from .backbone import EscnLinear, edge_frames, rotate
from .radial import BesselBasis, ScalarMLP, polynomial_envelope
from .readout import BlockEncoder, BlockReadout, block_shells
from .so2 import FrameGate, SO2Linear
from .so3 import escn_irreps, escn_to_e3nn

__all__ = ["PairUpdate", "channelwise_tensor_product"]


def channelwise_tensor_product(irreps1: o3.Irreps, irreps2: o3.Irreps, lmax_out: int,
                               channels: int) -> o3.TensorProduct:
    """'uuu' tensor product into ``escn_irreps(lmax_out, channels)``, weights given per sample."""
    irreps_out = escn_irreps(lmax_out, channels)
    instr = []
    for i1, (_, ir1) in enumerate(irreps1):
        for i2, (_, ir2) in enumerate(irreps2):
            for io, (_, ir_o) in enumerate(irreps_out):
                if ir_o in ir1 * ir2:
                    instr.append((i1, i2, io, "uuu", True))
    return o3.TensorProduct(irreps1, irreps2, irreps_out, instr,
                            shared_weights=False, internal_weights=False)


class PairUpdate(nn.Module):
    """Node features -> raw off-site blocks ``[K, P, P]`` (units of the output scale).

    forward(x [N, R, 2, C], scalars [N, C], z_emb [N, E_z], pos_e3nn [N, 3] Angstrom,
    pair_index [2, K], blocks [K, 2, P, P] or None) -> [K, P, P]
    """

    def __init__(self, irreps_block: str, lmax: int, channels: int, pair_channels: int,
                 tp_channels: int, block_channels: int, num_radial: int, pair_cutoff: float,
                 elem_dim: int, block_inputs: bool, pair_chunk: int):
        super().__init__()
        self.lmax, self.pair_cutoff, self.pair_chunk = lmax, float(pair_cutoff), int(pair_chunk)
        self.cp, self.cb = pair_channels, block_channels if block_inputs else 0
        self.lblock = max(l for l, _ in block_shells(irreps_block))
        self.ltp = min(self.lblock, lmax)
        # stage I
        self.proj = EscnLinear(lmax, channels, pair_channels)
        self.block_encoder = (BlockEncoder(irreps_block, 2, lmax, block_channels)
                              if block_inputs else None)
        self.so2_1 = SO2Linear(lmax, 2 * pair_channels + self.cb, pair_channels)
        self.gate = FrameGate(lmax, pair_channels)
        self.so2_2 = SO2Linear(lmax, pair_channels, pair_channels)
        # stage II
        self.tp_proj = EscnLinear(self.ltp, channels, tp_channels)
        irreps_s = escn_irreps(self.ltp, tp_channels)
        self.tp = channelwise_tensor_product(irreps_s, irreps_s, min(2 * self.ltp, lmax),
                                             tp_channels)
        # pair scalars: radial basis, both atoms' scalars, both elements
        self.rbf = BesselBasis(pair_cutoff, num_radial)
        self.node_scalar = nn.Linear(channels, pair_channels)
        self.scalar_dim = num_radial + 2 * pair_channels + 2 * elem_dim
        self.pair_mlp = ScalarMLP([self.scalar_dim, 2 * pair_channels,
                                   pair_channels + self.tp.weight_numel])
        self.readout = BlockReadout(escn_irreps(lmax, pair_channels) + self.tp.irreps_out,
                                    irreps_block, self.scalar_dim, 2 * pair_channels)

    def _chunk(self, xp, xs, s, z_emb, pos, pair, blocks):
        i, j = pair[0], pair[1]
        vec = pos[j] - pos[i]  # [k, 3]
        r = vec.norm(dim=-1)  # [k] Angstrom
        scal = torch.cat([self.rbf(r), s[i], s[j], z_emb[i], z_emb[j]], dim=-1)
        film, tp_w = self.pair_mlp(scal).split([self.cp, self.tp.weight_numel], dim=-1)
        # stage I: SO(2) pair encoder
        feats = [xp[i], xp[j]]
        if self.block_encoder is not None:
            feats.append(self.block_encoder(blocks))  # [k, R, 2, Cb]
        d = edge_frames(vec, self.lmax)  # [k, R, R]
        h = self.so2_1(rotate(d, torch.cat(feats, dim=-1))) * film[:, None, None, :]
        y1 = rotate(d, self.so2_2(self.gate(h)), inverse=True)  # [k, R, 2, Cp]
        # stage II: CG tensor product of the two atoms' features
        y2 = self.tp(xs[i], xs[j], tp_w)  # [k, dim(tp.irreps_out)]
        out = self.readout(torch.cat([escn_to_e3nn(y1), y2], dim=-1), scal)  # [k, P, P]
        return out * polynomial_envelope(r, self.pair_cutoff)[:, None, None]

    def forward(self, x, scalars, z_emb, pos_e3nn, pair_index, blocks=None):
        if (blocks is None) != (self.block_encoder is None):
            raise ValueError("off-site block inputs must be given exactly when block_inputs=True")
        size = self.readout.size
        if pair_index.shape[1] == 0:
            return x.new_zeros(0, size, size)
        xp = self.proj(x)  # [N, R, 2, Cp]
        xs = escn_to_e3nn(self.tp_proj(x[:, :(self.ltp + 1) ** 2]))  # [N, dim(irreps_s)]
        s = self.node_scalar(scalars)  # [N, Cp]
        outs = []
        for start in range(0, pair_index.shape[1], self.pair_chunk):
            sl = slice(start, start + self.pair_chunk)
            outs.append(self._chunk(xp, xs, s, z_emb, pos_e3nn, pair_index[:, sl],
                                    None if blocks is None else blocks[sl]))
        return torch.cat(outs)
