"""Run one SCF from a named initial guess and record what it cost.

Shared by ``qhflow scf`` and the benchmark harness, so both measure the same
thing: a fresh SCF object per guess (PySCF would otherwise reuse an existing
``mf.mo_coeff``), identical settings, wall time that includes the guess
itself (model inference and H_init for ``'qhflow'``), and the number of Fock
builds (calls to ``get_veff``).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from pyscf import dft, gto, scf

from .errors import check_geometry

__all__ = ["PYSCF_GUESSES", "load_molecule", "make_scf", "run_scf"]

# every built-in guess PySCF offers for molecules, in the order reported
PYSCF_GUESSES = ("minao", "atom", "huckel", "sap", "1e")


def load_molecule(path: str | Path, basis: str = "def2-svp", charge: int = 0,
                  spin: int | None = None, verbose: int = 0) -> gto.Mole:
    """Build a Mole from an .xyz file (Angstrom), checking the geometry first."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such geometry file: {path}")
    lines = path.read_text().splitlines()
    try:
        natm = int(lines[0].split()[0])
        rows = [ln.split() for ln in lines[2:2 + natm]]
        symbols = [r[0] for r in rows]
        coords = np.array([[float(x) for x in r[1:4]] for r in rows])
    except (IndexError, ValueError) as err:
        raise ValueError(f"{path}: not a valid .xyz file ({err})") from None
    if len(rows) != natm:
        raise ValueError(f"{path}: header says {natm} atoms, found {len(rows)}")
    check_geometry(coords)
    mol = gto.Mole(atom=list(zip(symbols, coords.tolist())), basis=basis, charge=charge,
                   unit="Angstrom", verbose=verbose)
    if spin is not None:
        mol.spin = spin
    else:
        mol.spin = (sum(gto.charge(s) for s in symbols) - charge) % 2
    return mol.build()


def make_scf(mol: gto.Mole, xc: str | None = "b3lyp", grid_level: int = 3,
             conv_tol: float = 1e-10, max_cycle: int = 100, density_fit: bool = False):
    """A fresh SCF object: (R|U)KS for a functional, (R|U)HF for ``xc`` None or 'hf'."""
    open_shell = mol.spin != 0
    if xc is None or xc.lower() == "hf":
        mf = scf.UHF(mol) if open_shell else scf.RHF(mol)
    else:
        mf = dft.UKS(mol, xc=xc) if open_shell else dft.RKS(mol, xc=xc)
        mf.grids.level = grid_level
    if density_fit:
        mf = mf.density_fit()
    mf.conv_tol = conv_tol
    mf.max_cycle = max_cycle
    return mf


def run_scf(mf, guess) -> dict:
    """Run ``mf.kernel()`` from ``guess`` (a PySCF key, 'qhflow', or a density matrix).

    Returns cycles, Fock builds, wall seconds (guess included), energy
    (Hartree), convergence, and for 'qhflow' whether the model was used.
    """
    counter = {"n": 0}
    get_veff = mf.get_veff

    def counting_get_veff(*args, **kwargs):
        counter["n"] += 1
        return get_veff(*args, **kwargs)

    # an instance attribute would trip PySCF's sanity check; a thin subclass does not
    mf.__class__ = type(mf.__class__.__name__, (mf.__class__,),
                        {"get_veff": staticmethod(counting_get_veff)})
    label = guess if isinstance(guess, str) else "dm"
    mf.init_guess = guess if isinstance(guess, str) else "minao"
    t0 = time.perf_counter()
    e_tot = mf.kernel(dm0=None if isinstance(guess, str) else guess)
    wall = time.perf_counter() - t0
    info = getattr(mf, "qhflow_info", None) or {}
    return {"guess": label, "cycles": int(mf.cycles), "fock_builds": counter["n"],
            "wall_s": wall, "e_tot": float(e_tot), "converged": bool(mf.converged),
            "qhflow_used": info.get("used") if label == "qhflow" else None,
            "inference_s": info.get("inference_s") if label == "qhflow" else None,
            # the overlap damping the gap guard settled on (pyscf_qhflow.gap_guard)
            "qhflow_tau": ((info.get("gap_guard") or {}).get("tau")
                           if label == "qhflow" else None)}
