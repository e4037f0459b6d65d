"""Unit conversions, in one place (PySCF's CODATA values, ``pyscf.data.nist``).

Inside the package energies are Hartree and lengths Bohr, except positions
given to the network (Angstrom, see :mod:`pyscf_qhflow.keys`).  Reports use
µHa for Hamiltonian errors, meV and meV/Angstrom for energies and forces.
"""
from __future__ import annotations

from pyscf.data import nist

HARTREE_TO_UHA = 1e6  # µHa per Hartree
HARTREE_TO_EV = nist.HARTREE2EV
HARTREE_TO_MEV = nist.HARTREE2EV * 1e3
BOHR_TO_ANGSTROM = nist.BOHR  # Angstrom per Bohr
