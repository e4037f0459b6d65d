"""The predictor: a network and its inference options -> predicted Fock matrices.

:class:`Predictor` wraps a :class:`~pyscf_qhflow.model.QHFlowModel` (the
network and its flow sampler) with the options that act at inference only:
the number of flow steps K, the overlap damping tau and the gap guard.
:meth:`Predictor.predict_batch` (and :meth:`Predictor.predict` for one
molecule) runs

1. check the input and that the model serves the molecule, and build its AO
   layout (:meth:`Predictor.prepare`: :func:`~pyscf_qhflow.errors.check_input`,
   basis and element checks, :class:`~pyscf_qhflow.aolayout.MolLayout`),
   once per molecule; a caller that already prepared passes ``layout=``;
2. H_init = MinAO-density Fock matrix in the model's functional
   (:func:`pyscf_qhflow.hinit.minao_fock`, unless the caller passes ``hinit=``,
   e.g. built beside the SCF with :func:`pyscf_qhflow.hinit.hinit_beside`) and
   the overlap S;
3. batch: records -> padded e3nn-order blocks (:func:`pyscf_qhflow.batching.make_batch`),
   in the model's dtype and device;
4. flow sampling under ``torch.no_grad`` (K Euler steps, :mod:`pyscf_qhflow.flow`)
   -> residual blocks F* - H_init;
5. blocks -> dense residual in PySCF order (:func:`~pyscf_qhflow.batching.unbatch_fock`):
   the raw residual of the :class:`Prediction`;
6. post-processing: damp the residual along near-null directions of S
   (``W R W``, :mod:`~pyscf_qhflow.guess.overlap_damping`), raising tau for
   this molecule while its predicted HOMO-LUMO gap is implausibly small
   (:mod:`~pyscf_qhflow.guess.gap_guard`); F = H_init + damped residual,
   symmetrised, float64 (Hartree).

:meth:`Predictor.sample_focks` runs the same pipeline on K copies of one
molecule in one network batch, each flow started from its own draw of the
prior (a seeded ``torch.Generator``): the spread of these Fock matrices is a
measure of the model's confidence (:mod:`pyscf_qhflow.uncertainty`).

Each call returns :class:`Prediction` objects (Fock matrix, raw residual,
H_init, S, gap-guard report, timings): nothing is kept on the predictor
between calls.  ``predict_fock(mol, hinit=None)`` returns only the matrix: it
is the *predictor protocol* the SCF hook accepts from any object.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from pyscf import gto
from pyscf.lib import logger

from .. import hinit as hinit_builder
from .. import keys
from ..aolayout import MolLayout
from ..batching import make_batch, unbatch_fock
from ..errors import UnsupportedMoleculeError, check_input
from ..flow import euler_sample, sample_prior
from .gap_guard import guarded_fock, log_guard_report, neutral_nocc

__all__ = ["Prediction", "Predictor"]


@dataclass
class Prediction:
    """One molecule's prediction; every matrix (nao, nao) float64, PySCF AO order, Hartree."""

    fock: np.ndarray  # H_init + post-processed residual, symmetric
    residual: np.ndarray  # raw network residual F* - H_init, before damping
    hinit: np.ndarray  # H_init the residual was added to
    overlap: np.ndarray  # S
    guard: dict  # gap-guard report (tau used, gaps, whether tau was raised)
    timings: dict = field(default_factory=dict)  # seconds per step, shared by one batch


class Predictor:
    """A network with its inference options; serves the ``'qhflow'`` guess.

    Args:
        model: a :class:`~pyscf_qhflow.model.QHFlowModel` (weights loaded).
        num_steps: flow Euler steps K (0 = plain regression); default: the model's config.
        overlap_damping: tau of the residual's damping ``W R W`` (0 = off);
            default: the value stored with the weights.
        min_gap_ratio: gap-guard threshold (0 = off); default: stored with the weights.

    The options are fixed at construction: build another ``Predictor`` on the
    same model to compare settings (the network is shared, not copied).
    """

    def __init__(self, model, num_steps: int | None = None,
                 overlap_damping: float | None = None, min_gap_ratio: float | None = None):
        cfg = model.config
        self.model = model
        self.num_steps = int(cfg.flow.num_steps if num_steps is None else num_steps)
        self.overlap_damping = float(cfg.overlap_damping if overlap_damping is None
                                     else overlap_damping)
        self.min_gap_ratio = float(cfg.min_gap_ratio if min_gap_ratio is None
                                   else min_gap_ratio)
        if self.num_steps < 0:
            raise ValueError(f"num_steps must be >= 0, got {self.num_steps}")
        if not self.overlap_damping >= 0:
            raise ValueError(f"overlap_damping must be >= 0, got {self.overlap_damping}")
        if not 0 <= self.min_gap_ratio < 1:
            raise ValueError(f"min_gap_ratio must be in [0, 1), got {self.min_gap_ratio}")

    # ------------------------------------------------------------ protocol
    @property
    def name(self) -> str:
        return self.model.name

    @property
    def xc(self) -> str:
        return self.model.xc

    @property
    def basis(self) -> str:
        return self.model.basis

    @property
    def card(self) -> dict:
        return dict(getattr(self.model, "card", {}))

    def __repr__(self) -> str:
        return (f"Predictor(model={self.name!r}, num_steps={self.num_steps}, "
                f"overlap_damping={self.overlap_damping:g}, "
                f"min_gap_ratio={self.min_gap_ratio:g})")

    # ------------------------------------------------------------ support
    def prepare(self, mol: gto.Mole) -> MolLayout:
        """Check that ``mol`` can be served and return its AO layout (step 1).

        Raises ``ValueError`` for bad geometry and
        :class:`~pyscf_qhflow.errors.UnsupportedMoleculeError` (naming the
        model) for what the model cannot serve: elements, Cartesian basis,
        ECP, ghost atoms, another basis set.
        """
        check_input(mol)
        try:
            layout = MolLayout.from_mol(mol, self.model.basis_layout)
        except UnsupportedMoleculeError as err:
            raise UnsupportedMoleculeError(f"model {self.name}: {err}") from None
        ref = mol.copy()
        ref.basis = self.basis
        ref.build(False, False)
        if ref._basis != mol._basis:
            raise UnsupportedMoleculeError(
                f"model {self.name}: mol.basis differs from the model's basis "
                f"{self.basis!r} (same shells, different functions)")
        return layout

    def supports(self, mol: gto.Mole) -> tuple[bool, str]:
        """``(True, note)`` or ``(False, reason)``: can this predictor serve ``mol``?

        Charged or open-shell molecules are served (the prediction is the
        spatial Fock matrix of a closed-shell-trained model) with a note.
        """
        try:
            self.prepare(mol)
        except UnsupportedMoleculeError as err:
            return False, str(err)
        if mol.charge != 0 or mol.spin != 0:
            return True, (f"note: trained on neutral closed-shell molecules; this one has "
                          f"charge {mol.charge}, 2S = {mol.spin}")
        return True, ""

    # ------------------------------------------------------------ prediction
    def predict_fock(self, mol: gto.Mole, hinit: np.ndarray | None = None) -> np.ndarray:
        """Predicted Fock matrix (nao, nao), PySCF AO order, Hartree, float64."""
        return self.predict(mol, hinit=hinit).fock

    def predict(self, mol: gto.Mole, hinit: np.ndarray | None = None,
                layout: MolLayout | None = None) -> Prediction:
        """:meth:`predict_batch` for one molecule."""
        return self.predict_batch([mol], hinits=None if hinit is None else [hinit],
                                  layouts=None if layout is None else [layout])[0]

    def predict_batch(self, mols: list[gto.Mole], hinits: list[np.ndarray] | None = None,
                      layouts: list[MolLayout] | None = None) -> list[Prediction]:
        """Predictions for several molecules, run as one network batch (steps in the module docstring).

        ``hinits``: H_init per molecule in the model's protocol, when the caller
        has built it; ``layouts``: from :meth:`prepare`, when the caller checked.
        """
        return self._run(mols, hinits, layouts, prior_seed=None)

    def sample_focks(self, mol: gto.Mole, num_samples: int, seed: int = 0,
                     hinit: np.ndarray | None = None,
                     layout: MolLayout | None = None) -> list[Prediction]:
        """``num_samples`` predictions of one molecule, each flow started from a prior draw.

        The K copies run as one network batch; the prior draws come from a
        ``torch.Generator`` seeded with ``seed``, so equal ``(num_samples,
        seed)`` give equal samples.  Post-processing (damping, gap guard) is
        the same as :meth:`predict`'s.  With ``num_steps = 0`` the flow takes
        no prior and the samples are all equal.
        """
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if layout is None:
            layout = self.prepare(mol)
        if hinit is None:
            hinit = hinit_builder.minao_fock(mol, xc=self.xc)
        return self._run([mol] * num_samples, [hinit] * num_samples, [layout] * num_samples,
                         prior_seed=int(seed))

    def _run(self, mols, hinits, layouts, prior_seed: int | None) -> list[Prediction]:
        """Steps 1-6 (module docstring); ``prior_seed``: start each flow from a seeded prior draw."""
        model = self.model
        timings: dict[str, float] = {}
        clock = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            timings[name] = timings.get(name, 0.0) + now - clock
            clock = now

        # 1. input, support and AO layout
        if layouts is None:
            layouts = [self.prepare(mol) for mol in mols]
        lap("layout")
        # 2. H_init and S
        if hinits is None:
            hinits = [hinit_builder.minao_fock(mol, xc=self.xc) for mol in mols]
        hs = [np.asarray(h, dtype=np.float64) for h in hinits]
        overlaps = [hinit_builder.overlap(mol) for mol in mols]
        lap("hinit")
        # 3. batch of padded blocks
        records = [{keys.Z: lay.atomic_numbers, keys.POS: mol.atom_coords(unit="Angstrom"),
                    keys.HINIT: h, keys.OVERLAP: s}
                   for mol, lay, h, s in zip(mols, layouts, hs, overlaps)]
        batch, info = make_batch(records, model.basis_layout, model.cutoff, model.pair_cutoff,
                                 dtype=model.dtype, device=model.device)
        lap("batch")
        # 4. flow sampling -> residual blocks
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                if prior_seed is None:
                    res_on, res_off = model.sample(batch, num_steps=self.num_steps)  # [N,P,P], [K,P,P]
                else:
                    res_on, res_off = self._sample_from_prior(batch, prior_seed)
        finally:
            model.train(was_training)
        lap("network")
        # 5.-6. raw dense residual in PySCF order; damped, guarded, F = H_init + residual
        residuals = unbatch_fock(res_on, res_off, info)
        predictions = []
        for mol, h, s, r in zip(mols, hs, overlaps, residuals):
            r = np.asarray(r, dtype=np.float64)
            f, report = guarded_fock(h, r, s, neutral_nocc(mol), self.overlap_damping,
                                     self.min_gap_ratio)
            if prior_seed is None:
                log_guard_report(mol, report)
            fock = np.ascontiguousarray(0.5 * (f + f.T), dtype=np.float64)
            predictions.append(Prediction(fock, r, h, s, report, timings))
        lap("assemble")
        logger.debug(mols[0], "qhflow predict (%d molecules, model %s%s): %s", len(mols),
                     self.name, "" if prior_seed is None else f", prior seed {prior_seed}",
                     ", ".join(f"{k} {v:.3f} s" for k, v in timings.items()))
        return predictions

    def _sample_from_prior(self, batch: dict, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The flow sampler of :meth:`QHFlowModel.sample` from a seeded prior draw per molecule."""
        model = self.model
        on0 = batch[keys.HINIT_ONSITE]  # [N, P, P]
        generator = torch.Generator(device=on0.device).manual_seed(seed)
        x0 = sample_prior(batch[keys.SLOT_MASK], batch[keys.PAIR_INDEX],
                          model.basis_layout.irreps_str, model.flow.prior_scale, generator,
                          on0.dtype)

        def endpoint(x, t):
            return model({**batch, keys.XT_ONSITE: x[0], keys.XT_OFFSITE: x[1], keys.T: t})

        return euler_sample(endpoint, x0, int(batch[keys.T].shape[0]), self.num_steps)
