"""Scalar building blocks: radial basis, cutoff envelope, time embedding, MLPs.

Distances are in Angstrom throughout; every function of a distance is smooth
and goes to zero (with its first derivatives) at the cutoff.
"""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["polynomial_envelope", "BesselBasis", "TimeEmbedding", "ScalarMLP"]


def polynomial_envelope(r: torch.Tensor, cutoff: float, p: int = 6) -> torch.Tensor:
    """DimeNet's polynomial envelope u(r/cutoff), 1 at 0 and C^2-smoothly 0 from the cutoff on."""
    d = (r / cutoff).clamp(max=1.0)
    u = (1.0 - (p + 1) * (p + 2) / 2 * d ** p + p * (p + 2) * d ** (p + 1)
         - p * (p + 1) / 2 * d ** (p + 2))
    return torch.where(r < cutoff, u, torch.zeros_like(u))


class BesselBasis(nn.Module):
    """``sqrt(2/c) sin(n pi r / c) / r * u(r)``, n = 1..num_basis (r [...], Angstrom -> [..., num_basis]).

    Frequencies are fixed (not trained) so the basis stays a smooth function of r.
    """

    def __init__(self, cutoff: float, num_basis: int = 8):
        super().__init__()
        self.cutoff = float(cutoff)
        self.num_basis = int(num_basis)
        self.register_buffer("freq", math.pi * torch.arange(1, num_basis + 1) / cutoff,
                             persistent=False)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        r = r[..., None].clamp(min=1e-6)  # [..., 1]
        basis = math.sqrt(2.0 / self.cutoff) * torch.sin(self.freq.to(r) * r) / r
        return basis * polynomial_envelope(r, self.cutoff)  # [..., num_basis]

    def extra_repr(self) -> str:
        return f"cutoff={self.cutoff} A, num_basis={self.num_basis}"


class TimeEmbedding(nn.Module):
    """Sinusoidal embedding of the flow time t in [0, 1] ([...] -> [..., dim])."""

    def __init__(self, dim: int = 32, max_period: float = 1000.0):
        super().__init__()
        if dim % 2:
            raise ValueError(f"time embedding dim must be even, got {dim}")
        half = dim // 2
        self.register_buffer(
            "freq", torch.exp(-math.log(max_period) * torch.arange(half) / half) * max_period,
            persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        arg = t[..., None] * self.freq.to(t)  # [..., dim/2]
        return torch.cat([torch.sin(arg), torch.cos(arg)], dim=-1)


class ScalarMLP(nn.Sequential):
    """Linear -> SiLU -> ... -> Linear on invariant scalars (``dims`` = in, hidden..., out)."""

    def __init__(self, dims: list[int] | tuple[int, ...], last_gain: float = 1.0):
        if len(dims) < 2:
            raise ValueError(f"ScalarMLP needs at least (in, out) dims, got {dims}")
        layers: list[nn.Module] = []
        for k in range(len(dims) - 1):
            layers.append(nn.Linear(dims[k], dims[k + 1]))
            if k < len(dims) - 2:
                layers.append(nn.SiLU())
        super().__init__(*layers)
        with torch.no_grad():
            layers[-1].weight.mul_(last_gain)
