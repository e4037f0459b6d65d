"""Flow matching on the residual Hamiltonian R = F* - H_init (on padded blocks).

States are pairs of block tensors ``(onsite [N, P, P], offsite [K, P, P])``
in Hartree, e3nn order (see :mod:`pyscf_qhflow.keys`).

* Interpolant: ``H_t = (1 - t) H_0 + t H_1`` with ``H_1`` the residual blocks
  and ``H_0`` a draw of the prior; ``t`` is one number per molecule.
* Prior: Gaussian irreps coefficients ``z ~ N(0, 1)`` of the Clebsch-Gordan
  decomposition of ``irreps_block x irreps_block``, expanded to blocks by
  the orthogonal CG change of basis Q of
  :func:`pyscf_qhflow.nn.readout.block_change_of_basis` (``block = z @ Q``).
  Q being orthogonal, this is in law an i.i.d. Gaussian on the block
  entries; it is written through Q so that the irreps are explicit.  The
  draw is masked to real AO slots, symmetrised like a Fock matrix
  (:func:`~pyscf_qhflow.blocks.symmetrize_blocks`) and scaled by
  ``prior_scale`` (Hartree).  Every step commutes with ``B -> D B D^T``, so
  the prior is rotation invariant in law (``tests/test_flow.py``).
* Target: the network predicts the endpoint ``H_1`` from ``(H_t, t)``.
* Sampler: ``num_steps`` = K Euler steps of the velocity
  ``(x1_hat - x_t) / (1 - t)`` on ``t_k = k / K``; the last step lands on the
  last endpoint prediction exactly.
* ``num_steps = 0`` is plain regression: one network call with ``x_t = 0``
  and ``t = 0``.  At t = 0 the state carries no information about ``H_1``, so
  a network trained with flow matching predicts there the conditional mean
  of ``H_1``: K = 0 is a deterministic, exactly equivariant predictor.  By
  default (``inference_start='zero'``) inference also starts from ``x_0 = 0``
  (the prior's mean) for K >= 1, so the predicted Fock matrix is
  deterministic and equivariant per call, not only in law (with that start
  K = 1 is the same single call as K = 0).  K is chosen on the validation
  set (``TrainConfig.choose_num_steps``, ``qhflow train --choose-k``).
* ``objective = 'regression'`` trains with ``t = 0, x_t = 0`` only.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Callable

import torch

from .config import reject_unknown_keys

from .batching import block_masks
from .blocks import symmetrize_blocks

__all__ = ["FlowConfig", "sample_prior", "sample_time", "interpolate", "euler_sample"]

Blocks = tuple[torch.Tensor, torch.Tensor]  # (onsite [N, P, P], offsite [K, P, P])


@dataclass(frozen=True)
class FlowConfig:
    """Options of the flow (training and inference)."""

    prior_scale: float = 0.01  # Hartree, std of the prior's irreps coefficients
    time_sampling: str = "uniform"  # 'uniform' or 'logit_normal'
    logit_mean: float = 0.0
    logit_std: float = 1.0
    num_steps: int = 0  # K Euler steps at inference; 0 = one regression call
    inference_start: str = "zero"  # inference starts from 'zero' or a 'prior' draw
    objective: str = "flow"  # 'flow' or 'regression'

    def __post_init__(self):
        if self.time_sampling not in ("uniform", "logit_normal"):
            raise ValueError(f"time_sampling must be 'uniform' or 'logit_normal', "
                             f"got {self.time_sampling!r}")
        if self.objective not in ("flow", "regression"):
            raise ValueError(f"objective must be 'flow' or 'regression', got {self.objective!r}")
        if self.inference_start not in ("zero", "prior"):
            raise ValueError(f"inference_start must be 'zero' or 'prior', "
                             f"got {self.inference_start!r}")
        if self.num_steps < 0:
            raise ValueError(f"num_steps must be >= 0, got {self.num_steps}")
        if self.prior_scale < 0:
            raise ValueError(f"prior_scale must be >= 0 Hartree, got {self.prior_scale}")

    @classmethod
    def from_dict(cls, d: dict) -> "FlowConfig":
        reject_unknown_keys(cls, d, "the flow options")
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)


@lru_cache(maxsize=8)
def _cg_basis(irreps_block: str) -> torch.Tensor:
    """Q [P*P, P*P] float64: block.flatten() = irreps coefficients @ Q."""
    from .nn.readout import block_change_of_basis
    return block_change_of_basis(irreps_block)[1]


def sample_prior(slot_mask: torch.Tensor, pair_index: torch.Tensor, irreps_block: str,
                 prior_scale: float, generator: torch.Generator | None = None,
                 dtype: torch.dtype | None = None) -> Blocks:
    """Draw H_0: CG-expanded Gaussian irreps, masked, symmetrised, times ``prior_scale``.

    ``slot_mask`` [N, P] bool, ``pair_index`` [2, K] (closed under reversal),
    ``irreps_block`` the padded per-atom irreps (e.g. '3x0e+2x1o+1x2e').
    Returns (onsite [N, P, P], offsite [K, P, P]) in Hartree.
    """
    n, p = slot_mask.shape
    k = pair_index.shape[1]
    dtype = dtype or torch.get_default_dtype()
    dev = slot_mask.device
    q = _cg_basis(str(irreps_block)).to(device=dev, dtype=dtype)  # [P*P, P*P]
    if q.shape[0] != p * p:
        raise ValueError(f"irreps_block {irreps_block!r} has {int(q.shape[0] ** 0.5)} "
                         f"slots, slot_mask has {p}")
    z = torch.randn(n + k, p * p, generator=generator, dtype=dtype, device=dev)  # irreps
    blocks = (z @ q).reshape(n + k, p, p)  # [N + K, P, P]
    m_on, m_off = block_masks(slot_mask, pair_index)
    on, off = symmetrize_blocks(blocks[:n] * m_on, blocks[n:] * m_off,
                                pair_index.cpu().numpy())
    return prior_scale * on, prior_scale * off


def sample_time(num_molecules: int, cfg: FlowConfig,
                generator: torch.Generator | None = None,
                dtype: torch.dtype | None = None, device=None) -> torch.Tensor:
    """Flow times t in [0, 1), one per molecule, [B]."""
    dtype = dtype or torch.get_default_dtype()
    if cfg.objective == "regression":
        return torch.zeros(num_molecules, dtype=dtype, device=device)
    if cfg.time_sampling == "uniform":
        return torch.rand(num_molecules, generator=generator, dtype=dtype, device=device)
    z = torch.randn(num_molecules, generator=generator, dtype=dtype, device=device)
    return torch.sigmoid(cfg.logit_mean + cfg.logit_std * z)


def interpolate(x0: Blocks, x1: Blocks, t: torch.Tensor, batch: torch.Tensor,
                pair_index: torch.Tensor) -> Blocks:
    """``x_t = (1 - t) x_0 + t x_1`` with t [B] broadcast to atoms ([N]) and pairs ([K])."""
    t_on = t[batch][:, None, None]  # [N, 1, 1]
    t_off = t[batch[pair_index[0]]][:, None, None]  # [K, 1, 1]
    return ((1 - t_on) * x0[0] + t_on * x1[0], (1 - t_off) * x0[1] + t_off * x1[1])


def euler_sample(predict_endpoint: Callable[[Blocks, torch.Tensor], Blocks], x0: Blocks,
                 num_molecules: int, num_steps: int) -> Blocks:
    """Integrate the flow from ``x0`` (t = 0) to t = 1 with K = ``num_steps`` Euler steps.

    ``predict_endpoint((x_on, x_off), t [B]) -> (x1_on, x1_off)``.  The update
    ``x += dt (x1_hat - x_t) / (1 - t)`` is written with the exact ratio
    ``dt / (1 - t_k) = 1 / (K - k)``; the last step returns ``x1_hat``.
    ``num_steps = 0``: one call at t = 0 from ``x0`` (pass zeros for regression).
    """
    on, off = x0
    t = torch.zeros(num_molecules, dtype=on.dtype, device=on.device)  # [B]
    if num_steps == 0:
        return predict_endpoint((on, off), t)
    for k in range(num_steps):
        t = torch.full((num_molecules,), k / num_steps, dtype=on.dtype, device=on.device)
        x1_on, x1_off = predict_endpoint((on, off), t)
        if k == num_steps - 1:
            return x1_on, x1_off
        frac = 1.0 / (num_steps - k)
        on = on + frac * (x1_on - on)
        off = off + frac * (x1_off - off)
    raise AssertionError("unreachable")
