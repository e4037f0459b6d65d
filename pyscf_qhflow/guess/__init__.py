"""The ``'qhflow'`` initial guess: from a network to a PySCF starting density.

* :mod:`.predictor` -- :class:`Predictor` (a model plus its inference options)
  and :class:`Prediction`: molecule -> H_init -> network -> Fock matrix;
* post-processing of the network's raw residual: :mod:`.overlap_damping`
  (damp it along near-null directions of S) and :mod:`.gap_guard` (damp more
  while the predicted HOMO-LUMO gap is implausibly small);
* :mod:`.hook` -- the PySCF side: ``mf.init_guess = 'qhflow'``, picking the
  predictor, building H_init beside the SCF, Fock -> density.

Only :mod:`.predictor` imports torch, and this package imports it lazily.
"""
from __future__ import annotations

__all__ = ["Predictor", "Prediction"]


def __getattr__(name: str):
    if name in __all__:
        from . import predictor
        return getattr(predictor, name)
    raise AttributeError(f"module 'pyscf_qhflow.guess' has no attribute {name!r}")
