"""pyscf-qhflow: equivariant-network Kohn-Sham Hamiltonians for PySCF.

Importing this package registers ``mf.init_guess = 'qhflow'`` on every PySCF
SCF class (RHF/RKS, UHF/UKS, ROHF/ROKS and their density-fitting and Newton
variants)::

    import pyscf_qhflow
    mf = dft.RKS(mol, xc='b3lyp'); mf.init_guess = 'qhflow'; mf.kernel()
    mf.qhflow_info          # which model was used, inference seconds

The import itself loads neither torch nor e3nn: the network and its weights
load with the first guess (once per process).  See ``docs/ARCHITECTURE.md``
for the data path and which module owns what.
"""
from __future__ import annotations

from . import config
from .errors import QHFlowGuessWarning, UnsupportedMoleculeError
from .guess.hook import init_guess_by_qhflow, predict_fock, register
from .oneshot import OneShotResult, oneshot

from .version import __version__

__all__ = ["config", "predict_fock", "set_default_model", "load_model", "QHFlowModel",
           "Predictor", "Prediction", "init_guess_by_qhflow", "UnsupportedMoleculeError",
           "QHFlowGuessWarning", "oneshot", "OneShotResult", "__version__"]


def set_default_model(model) -> None:
    """Use ``model`` (a Predictor, a QHFlowModel, a checkpoint path or a packaged
    name, or None for the shipped weights) whenever an SCF object has no
    ``qhflow_model``."""
    from .guess.hook import resolve_model
    config.default_model = None if model is None else resolve_model(model=model)


def __getattr__(name: str):
    # torch-heavy pieces load on first use, so `import pyscf_qhflow` stays light
    if name == "load_model":
        from .checkpoint import load_model
        return load_model
    if name == "QHFlowModel":
        from .model import QHFlowModel
        return QHFlowModel
    if name in ("Predictor", "Prediction"):
        from .guess import predictor
        return getattr(predictor, name)
    raise AttributeError(f"module 'pyscf_qhflow' has no attribute {name!r}")


register()
