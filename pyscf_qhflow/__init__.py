"""pyscf-qhflow: equivariant-network Kohn-Sham Hamiltonians for PySCF.

Importing this package registers ``mf.init_guess = 'qhflow'`` on every PySCF
SCF class (RHF/RKS, UHF/UKS, ROHF/ROKS and their density-fitting and Newton
variants)::

    import pyscf_qhflow
    mf = dft.RKS(mol, xc='b3lyp'); mf.init_guess = 'qhflow'; mf.kernel()
    mf.qhflow_info          # which model was used, inference seconds
"""
from __future__ import annotations

from . import config
from .aolayout import UnsupportedMoleculeError
from .oneshot import OneShotResult, oneshot
from .scf_guess import (QHFlowGuessWarning, init_guess_by_qhflow, predict_fock,
                        register)

__version__ = "0.1.0"

__all__ = ["config", "predict_fock", "set_default_model", "load_model", "QHFlowModel",
           "init_guess_by_qhflow", "UnsupportedMoleculeError", "QHFlowGuessWarning",
           "oneshot", "OneShotResult",
           "__version__"]


def set_default_model(model) -> None:
    """Use ``model`` (a predictor, a checkpoint path or a packaged name, or None
    for the shipped weights) whenever an SCF object has no ``qhflow_model``."""
    if isinstance(model, str):
        from .checkpoint import load_model
        model = load_model(model)
    config.default_model = model


def __getattr__(name: str):
    # torch-heavy pieces load on first use, so `import pyscf_qhflow` stays light
    if name == "load_model":
        from .checkpoint import load_model
        return load_model
    if name == "QHFlowModel":
        from .model import QHFlowModel
        return QHFlowModel
    raise AttributeError(f"module 'pyscf_qhflow' has no attribute {name!r}")


register()
