"""H_init, the MinAO-density Fock matrix, and the model-protocol KS object.

The network predicts the residual ``F* - H_init`` where ``H_init`` is the
Kohn-Sham Fock matrix (Hartree, PySCF AO order) built from PySCF's MinAO
guess density in the model's functional and grid.  Everything that needs a
KS object "in the model protocol" (labelling, H_init, the benchmark) builds
it with :func:`protocol_ks`, so the protocol lives in one place, and every
H_init of the package is built here: :func:`minao_fock` on its own,
:func:`hinit_beside` sharing grids and integrals with an SCF object (the
guess, the labeller, one-shot).

* restricted closed-shell ``dft.rks.RKS`` (never the ROKS that ``dft.RKS``
  returns for ``mol.spin != 0``),
* spherical basis (``mol.cart`` must be False), no density fitting,
* ``grids.level = grid_level`` (PySCF's default pruned Treutler grids).

Open-shell or charged molecules.  PySCF's MinAO guess is a superposition of
*neutral* spherically averaged atoms: its spin-summed density ignores
``mol.charge`` and ``mol.spin`` (its trace is the neutral electron count).
:func:`minao_fock` always builds the closed-shell RKS Fock of that spin-summed
density, for any charge and spin; ``rks.RKS`` on an odd-electron ``mol``
builds ``get_init_guess``/``get_fock`` without complaint (checked in
``tests/test_data.py``), so no spin-0 copy of ``mol`` is needed.  H_init is
therefore a function of the geometry, basis, functional and grid only.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from pyscf import gto
from pyscf.lib import logger

if TYPE_CHECKING:
    from pyscf.dft import rks

__all__ = ["PROTOCOL_GRID_LEVEL", "protocol_ks", "minao_fock", "hinit_beside", "overlap"]

PROTOCOL_GRID_LEVEL = 3  # the QH9 protocol's DFT grid (labels, and the network's H_init)


def protocol_ks(mol: gto.Mole, xc: str = "b3lyp",
                grid_level: int = PROTOCOL_GRID_LEVEL) -> "rks.RKS":
    """A restricted KS object in the QH9 protocol (see the module docstring).

    Raises ``ValueError`` for a Cartesian basis: labels and models are spherical.
    """
    if mol.cart:
        raise ValueError("the qhflow protocol uses spherical basis functions; "
                         "got mol.cart=True")
    from pyscf.dft import rks  # here, so overlap() needs no DFT libraries (libxc)
    mf = rks.RKS(mol, xc=xc)
    mf.grids.level = grid_level
    return mf


def minao_fock(mol: gto.Mole, xc: str = "b3lyp",
               grid_level: int = PROTOCOL_GRID_LEVEL) -> np.ndarray:
    """Fock matrix of PySCF's MinAO guess density, Hartree, PySCF AO order.

    ``F = h + J[D] - a_x/2 K[D] + V_xc[D]`` with ``D = mf.get_init_guess(key='minao')``
    of a :func:`protocol_ks` object (spin-summed, neutral atoms; see the module
    docstring for charged and open-shell molecules).  One Fock build: seconds
    for a QM9 molecule in def2-SVP.  Returns (nao, nao) float64, symmetric.
    """
    mf = protocol_ks(mol, xc=xc, grid_level=grid_level)
    t0 = (logger.process_clock(), logger.perf_counter())
    dm = mf.get_init_guess(mol, key="minao")  # [nao, nao]
    fock = np.asarray(mf.get_fock(dm=dm))  # [nao, nao]
    logger.timer(mf, "qhflow H_init (minao Fock)", *t0)
    return 0.5 * (fock + fock.T)


_GRID_KEYS = ("level", "prune", "atom_grid", "radi_method", "becke_scheme", "radii_adjust")


def hinit_beside(mf, mol: gto.Mole, xc: str, grid_level: int = PROTOCOL_GRID_LEVEL
                 ) -> tuple[np.ndarray | None, list[str]]:
    """H_init of ``mol`` in the protocol (``xc``, ``grid_level``), built beside the SCF ``mf``.

    H_init needs the two-electron integrals and a DFT grid; the SCF that
    follows needs the same integrals, and the same grid when it is a
    restricted KS calculation with the protocol's grid settings.  So a
    :func:`protocol_ks` object borrows what ``mf`` already holds, builds the
    rest, and hands it back: neither is computed twice.  (A separate in-core
    ERI build, repeated by the SCF, made HF and other functionals slower than
    MinAO.)

    * integrals: shared when ``mf`` keeps them in core (PySCF's own rule,
      ``_is_mem_enough`` under ``mf.max_memory``);
    * grids: shared only with a restricted closed-shell KS ``mf`` whose grid
      settings are the protocol's.  Both then build and prune the grid with the
      same rule (pruning uses the first closed-shell density), so the SCF runs
      on the grid it would have built itself.

    Returns ``(fock, shared)``: H_init (nao, nao) float64 symmetric, Hartree,
    and the names of what was shared.  ``(None, [])`` when ``mf`` uses density
    fitting (its integrals are not the protocol's exact ones): build H_init
    with :func:`minao_fock` then.
    """
    from pyscf.dft import rks
    from pyscf.scf import rohf, uhf

    if getattr(mf, "with_df", None) is not None:
        return None, []
    ref = protocol_ks(mol, xc=xc, grid_level=grid_level)
    ref.max_memory = mf.max_memory
    ref.verbose = mf.verbose
    ref.stdout = mf.stdout
    t0 = (logger.process_clock(), logger.perf_counter())
    shared = []
    if (isinstance(mf, rks.KohnShamDFT) and not isinstance(mf, (uhf.UHF, rohf.ROHF))
            and all(getattr(mf.grids, k) == getattr(ref.grids, k) for k in _GRID_KEYS)):
        ref.grids = mf.grids
        shared.append("grids")
    if mf._eri is not None:
        ref._eri = mf._eri
    # decided before ref builds its integrals: afterwards the process holds them, and
    # mf's memory check (which counts the process's memory) would refuse the very
    # integrals it is handed, and the SCF would run direct, twice as slow per cycle
    mf_keeps_eri = mf._eri is None and (mol.incore_anyway or mf._is_mem_enough())
    if mf_keeps_eri:  # what PySCF's get_jk would build for mf; ref then needs no check
        ref._eri = mol.intor("int2e", aosym="s8")
    fock = np.asarray(ref.get_fock(dm=ref.init_guess_by_minao(mol)))  # [nao, nao]
    if mf_keeps_eri:
        mf._eri = ref._eri
    if mf._eri is not None and mf._eri is ref._eri:
        shared.append("integrals")
    if "grids" in shared:
        mf.grids = ref.grids  # pruning may hand back a new object
    logger.timer(mf, f"qhflow H_init (minao Fock in {xc}; shared with the SCF: "
                     f"{', '.join(shared) or 'nothing'})", *t0)
    return 0.5 * (fock + fock.T), shared


def overlap(mol: gto.Mole) -> np.ndarray:
    """AO overlap matrix S, (nao, nao) float64, PySCF AO order."""
    return mol.intor_symmetric("int1e_ovlp")
