"""Geometry -> graphs: backbone edges and the (longer-range) pair list.

Positions are in Angstrom.  Both lists stay inside each molecule of a batch.
"""
from __future__ import annotations

import torch

__all__ = ["radius_pairs"]


def radius_pairs(pos: torch.Tensor, batch: torch.Tensor, cutoff: float,
                 chunk: int = 4096) -> torch.Tensor:
    """Ordered pairs (j, i), i != j, same molecule, |r_i - r_j| < cutoff (Angstrom).

    Returns [2, K] int64, sorted by (first, second) index.  Built in row chunks
    so memory stays O(chunk * N) for large molecules.
    """
    n = pos.shape[0]
    out = []
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        d = torch.cdist(pos[start:stop], pos)  # [chunk, N]
        same = batch[start:stop, None] == batch[None, :]
        keep = same & (d < cutoff)
        idx = torch.arange(start, stop, device=pos.device)
        keep[idx - start, idx] = False
        a, b = torch.nonzero(keep, as_tuple=True)
        out.append(torch.stack([a + start, b]))
    return torch.cat(out, dim=1) if out else torch.zeros(2, 0, dtype=torch.long)
