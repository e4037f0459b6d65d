"""QHFlowNet: the equivariant flow-matching network (QHFlow2 / eSCN style), pure torch + e3nn.

Pipeline of :meth:`QHFlowNet.forward` (batch keys from :mod:`pyscf_qhflow.keys`):

1. per-atom scalars: element embedding + invariants (traces of every
   (k1, k2) same-l sub-block) of the on-site H_init, S and x_t blocks +
   sinusoidal embedding of t, looked up per atom as ``t[batch]``;
   optionally the on-site blocks written in irreps (CG) as l > 0 features;
2. eSCN backbone over ``edge_index`` (cutoff ``cfg.cutoff``);
3. on-site readout (CG tensor expansion) from node features;
4. two-stage pair update + readout over ``pair_index`` (``cfg.pair_cutoff``);
5. exact symmetrisation (reverse pairs by index), x ``cfg.output_scale``
   (Hartree), padding zeroed with ``slot_mask``.

Output: ``(onsite [N, P, P], offsite [K, P, P])``, the predicted flow
endpoint F* - H_init in Hartree, padded e3nn order.  Flow-state inputs
``xt_*`` are in the same units (Hartree); the network divides them by
``output_scale``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from .. import keys
from ..aolayout import positions_to_e3nn  # the owner of the PySCF -> e3nn axis order
from .backbone import InteractionBlock, edge_frames
from .pair import PairUpdate
from .radial import BesselBasis, ScalarMLP, TimeEmbedding, polynomial_envelope
from ..blocks import reverse_pair_index, symmetrize_blocks
from .readout import BlockEncoder, BlockReadout, block_invariants_matrix, block_shells
from .so3 import escn_irreps, escn_to_e3nn

__all__ = ["NetConfig", "QHFlowNet", "NET_PRESETS"]


@dataclass(frozen=True)
class NetConfig:
    """Hyper-parameters of :class:`QHFlowNet` (distances in Angstrom, output scale in Hartree).

    Unknown keys are rejected: ``NetConfig(**d)`` raises ``TypeError``,
    :meth:`from_dict` raises ``ValueError`` naming them.
    """

    irreps_block: str = "3x0e+2x1o+1x2e"  # padded per-atom AO irreps (BasisLayout.irreps_str)
    elements: tuple[int, ...] = (1, 6, 7, 8, 9)  # atomic numbers the model knows
    channels: int = 32  # C: node channels per (l, parity class)
    lmax: int = 4  # node feature lmax (blocks of l <= 2 shells need 4)
    mmax: int = 2  # largest |m| of the backbone SO(2) maps (pair encoder uses lmax)
    num_layers: int = 3
    hidden_channels: int = 0  # SO(2)/feed-forward hidden width; 0 -> channels
    cutoff: float = 5.0  # backbone radius graph, Angstrom
    pair_cutoff: float = 15.0  # off-site pair list, Angstrom
    num_radial: int = 8  # Bessel functions
    elem_dim: int = 16  # element embedding width for edge/pair scalars
    time_dim: int = 32  # sinusoidal time embedding width
    pair_channels: int = 16  # stage-I pair features per (l, class)
    tp_channels: int = 8  # stage-II tensor-product channels
    block_channels: int = 8  # channels of the irreps encoding of input blocks
    block_inputs: bool = True  # feed H_init / S / x_t blocks as irreps (not only invariants)
    avg_neighbors: float = 10.0  # message sum is divided by this
    output_scale: float = 0.01  # Hartree per network unit
    edge_chunk: int = 16384  # backbone edges per chunk
    pair_chunk: int = 4096  # pairs per chunk

    def __post_init__(self):
        object.__setattr__(self, "elements", tuple(int(z) for z in self.elements))
        if not self.elements or min(self.elements) < 1:
            raise ValueError(f"elements must be atomic numbers >= 1, got {self.elements}")
        for name in ("channels", "num_layers", "num_radial", "pair_channels", "tp_channels",
                     "elem_dim", "edge_chunk", "pair_chunk"):
            if getattr(self, name) < 1:
                raise ValueError(f"NetConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.lmax < 0 or self.mmax < 0:
            raise ValueError(f"lmax and mmax must be >= 0, got {self.lmax}, {self.mmax}")
        if self.time_dim % 2:
            raise ValueError(f"time_dim must be even, got {self.time_dim}")
        if not (self.cutoff > 0 and self.pair_cutoff > 0 and self.output_scale > 0):
            raise ValueError("cutoff, pair_cutoff and output_scale must be positive")
        block_shells(self.irreps_block)  # validates the irreps string

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "NetConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown NetConfig keys {unknown}; known keys: {sorted(known)}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["elements"] = list(self.elements)
        return d


# Recommended sizes (parameter counts and CPU timings in the module tests/report).
NET_PRESETS = MappingProxyType({
    "tiny": MappingProxyType(dict(channels=8, num_layers=2, lmax=4, mmax=2, pair_channels=8,
                                  tp_channels=4, block_channels=4, elem_dim=8, time_dim=16)),
    "small": MappingProxyType(dict(channels=32, num_layers=3, lmax=4, mmax=2, pair_channels=16,
                                   tp_channels=8, block_channels=8)),
    "medium": MappingProxyType(dict(channels=64, num_layers=6, lmax=4, mmax=2, pair_channels=32,
                                    tp_channels=16, block_channels=16)),
})


class QHFlowNet(nn.Module):
    """Predicts the residual F* - H_init as padded blocks (see module docstring).

    forward(batch) -> (onsite [N, P, P], offsite [K, P, P]) in Hartree, symmetric,
    padding zeroed; works in float32 and float64 (``.double()``).
    """

    def __init__(self, cfg: NetConfig):
        super().__init__()
        if not isinstance(cfg, NetConfig):
            raise TypeError(f"QHFlowNet needs a NetConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        c, lmax = cfg.channels, cfg.lmax
        hidden = cfg.hidden_channels or c
        shells = block_shells(cfg.irreps_block)
        self.size = sum(2 * l + 1 for l, _ in shells)
        table = torch.full((max(cfg.elements) + 1,), -1, dtype=torch.long)
        table[list(cfg.elements)] = torch.arange(len(cfg.elements))
        self.register_buffer("z_table", table, persistent=False)
        inv = block_invariants_matrix(cfg.irreps_block)
        self.register_buffer("inv_matrix", inv, persistent=False)
        # 1. inputs
        self.z_embed = nn.Embedding(len(cfg.elements), c)
        self.z_embed_small = nn.Embedding(len(cfg.elements), cfg.elem_dim)
        self.inv_lin = nn.Linear(3 * inv.shape[0], c)
        self.time_embed = TimeEmbedding(cfg.time_dim)
        self.time_mlp = ScalarMLP([cfg.time_dim, c, c])
        self.onsite_encoder = (BlockEncoder(cfg.irreps_block, 3, lmax, c)
                               if cfg.block_inputs else None)
        # 2. backbone
        self.rbf = BesselBasis(cfg.cutoff, cfg.num_radial)
        edge_dim = cfg.num_radial + 2 * cfg.elem_dim
        self.layers = nn.ModuleList(
            InteractionBlock(lmax, cfg.mmax, c, hidden, edge_dim, cfg.avg_neighbors)
            for _ in range(cfg.num_layers))
        # 3. on-site readout
        self.onsite_readout = BlockReadout(escn_irreps(lmax, c), cfg.irreps_block,
                                           c + cfg.elem_dim, c)
        # 4. pairs
        self.pair = PairUpdate(cfg.irreps_block, lmax, c, cfg.pair_channels, cfg.tp_channels,
                               cfg.block_channels, cfg.num_radial, cfg.pair_cutoff,
                               cfg.elem_dim, cfg.block_inputs, cfg.pair_chunk)

    def _check(self, batch: dict) -> None:
        missing = [k for k in (keys.Z, keys.POS, keys.BATCH, keys.EDGE_INDEX, keys.PAIR_INDEX,
                               keys.SLOT_MASK, keys.HINIT_ONSITE, keys.HINIT_OFFSITE,
                               keys.OVERLAP_ONSITE, keys.XT_ONSITE, keys.XT_OFFSITE, keys.T)
                   if k not in batch]
        if missing:
            raise KeyError(f"QHFlowNet batch lacks keys {missing}")
        p = batch[keys.SLOT_MASK].shape[-1]
        if p != self.size:
            raise ValueError(f"batch has {p} padded slots per atom, but irreps_block "
                             f"{self.cfg.irreps_block!r} has {self.size}")

    def forward(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(batch)
        cfg = self.cfg
        dtype = self.inv_lin.weight.dtype
        z = batch[keys.Z]
        if int(z.max()) >= len(self.z_table) or bool((self.z_table[z.clamp(min=0)] < 0).any()):
            raise ValueError(f"atomic numbers {sorted(set(z.tolist()) - set(cfg.elements))} "
                             f"are not among the model's elements {cfg.elements}")
        zi = self.z_table[z]  # [N]
        pos = positions_to_e3nn(batch[keys.POS].to(dtype))  # [N, 3] Angstrom, e3nn frame
        n = z.shape[0]
        h_on = batch[keys.HINIT_ONSITE].to(dtype)  # [N, P, P] Hartree
        s_on = batch[keys.OVERLAP_ONSITE].to(dtype)
        x_on = batch[keys.XT_ONSITE].to(dtype) / cfg.output_scale
        # 1. node inputs
        mats = torch.stack([h_on, s_on, x_on], dim=1)  # [N, 3, P, P]
        inv = torch.asinh(mats.reshape(n, 3, -1) @ self.inv_matrix.to(dtype).T)  # [N, 3, n_inv]
        t_atom = batch[keys.T].to(dtype)[batch[keys.BATCH]]  # [N], per atom via batch[atom]
        scal0 = (self.z_embed(zi) + self.inv_lin(inv.reshape(n, -1))
                 + self.time_mlp(self.time_embed(t_atom)))  # [N, C]
        if self.onsite_encoder is not None:
            x = self.onsite_encoder(mats)  # [N, R, 2, C]
        else:
            x = scal0.new_zeros(n, (cfg.lmax + 1) ** 2, 2, cfg.channels)
        x = x.clone()
        x[:, 0, 0] = x[:, 0, 0] + scal0
        # 2. backbone
        edge_index = batch[keys.EDGE_INDEX]
        src, dst = edge_index[0], edge_index[1]
        vec = pos[src] - pos[dst]  # [E, 3]
        r = vec.norm(dim=-1)
        z_small = self.z_embed_small(zi)  # [N, elem_dim]
        edge_scalars = torch.cat([self.rbf(r), z_small[src], z_small[dst]], dim=-1)
        envelope = polynomial_envelope(r, cfg.cutoff)
        d = edge_frames(vec, cfg.lmax, cfg.mmax)  # [E, R', R]
        for layer in self.layers:
            x = layer(x, edge_index, d, edge_scalars, envelope, cfg.edge_chunk)
        scalars = x[:, 0, 0]  # [N, C] invariant
        # 3. on-site blocks
        onsite = self.onsite_readout(escn_to_e3nn(x), torch.cat([scalars, z_small], dim=-1))
        # 4. off-site blocks
        pair_index = batch[keys.PAIR_INDEX]
        blocks = None
        if cfg.block_inputs:
            blocks = torch.stack([batch[keys.HINIT_OFFSITE].to(dtype),
                                  batch[keys.XT_OFFSITE].to(dtype) / cfg.output_scale], dim=1)
        offsite = self.pair(x, scalars, z_small, pos, pair_index, blocks)  # [K, P, P]
        # 5. symmetrise, scale, mask
        onsite, offsite = symmetrize_blocks(onsite, offsite, pair_index,
                                            rev=reverse_pair_index(pair_index))
        mask = batch[keys.SLOT_MASK].to(torch.bool)  # [N, P]
        m_on = mask[:, :, None] & mask[:, None, :]
        m_off = mask[pair_index[0]][:, :, None] & mask[pair_index[1]][:, None, :]
        return (onsite * (cfg.output_scale * m_on.to(dtype)),
                offsite * (cfg.output_scale * m_off.to(dtype)))
