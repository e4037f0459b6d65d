"""Atomic-orbital layout: the only module that knows orbital ordering and axes.

PySCF stores a spherical AO basis atom by atom, shell by shell, and inside a
shell with several contractions as ``[contraction][m]``.  Inside one (2l+1)
group PySCF orders real solid harmonics as m = -l..l, except for p shells,
which it writes as (px, py, pz).  e3nn orders every l as m = -l..l, and takes y as
its polar axis.  Writing Cartesian vectors in e3nn's frame as
``(x, y, z)_e3nn = (y, z, x)_pyscf`` (:data:`CARTESIAN_TO_E3NN`) makes the real
harmonics agree, so a p shell (px, py, pz) reads (py, pz, px) in e3nn order.
Hence the PySCF -> e3nn permutation is that same ``[1, 2, 0]`` on p shells and
the identity for every other l (checked for d, f and g against e3nn's
Wigner-D matrices in ``tests/test_aolayout.py``).  The network takes its axis
convention from here (:func:`positions_to_e3nn`), so both facts have one owner.

The network works on *padded* per-atom blocks in e3nn order.  A
:class:`BasisLayout` fixes, for a basis and a set of elements, the union of
shells: for each l the largest number of shells any element has.  Every atom
is embedded into that padded layout, its k-th shell of angular momentum l
going to the k-th slot of l.  :class:`MolLayout` maps the padded slots of each
atom of one molecule to PySCF AO indices; :mod:`pyscf_qhflow.blocks` uses that
map to cut a dense matrix into blocks and to put it back together.

numpy only at import: PySCF is imported where a molecule is read, torch
where a Wigner-D matrix is built, so the network can import the axis
convention without importing PySCF.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from .errors import UnsupportedMoleculeError

if TYPE_CHECKING:
    from pyscf import gto

__all__ = ["ao_atom_indices",
    "UnsupportedMoleculeError",
    "CARTESIAN_TO_E3NN",
    "pyscf_to_e3nn_shell_order",
    "element_shells",
    "BasisLayout",
    "MolLayout",
    "check_supported_mol",
    "positions_to_e3nn",
    "rotation_to_e3nn",
]

# e3nn's real spherical harmonics take y as the polar axis, PySCF's take z.
# Relabelling Cartesian axes as e3nn_xyz = pyscf_(y, z, x) makes the two sets
# of real harmonics coincide for every l (only p needs this order).
CARTESIAN_TO_E3NN = np.array([1, 2, 0])


def positions_to_e3nn(positions):
    """Cartesian vectors (..., 3) in PySCF's frame -> e3nn's frame (numpy or torch)."""
    return positions[..., CARTESIAN_TO_E3NN]


def rotation_to_e3nn(rotation: np.ndarray) -> np.ndarray:
    """A 3x3 rotation acting on PySCF-frame vectors, written in e3nn's frame."""
    p = CARTESIAN_TO_E3NN
    return rotation[np.ix_(p, p)]


def pyscf_to_e3nn_shell_order(l: int) -> np.ndarray:
    """Indices that reorder one PySCF (2l+1) group into e3nn order.

    ``e3nn_vector = pyscf_vector[pyscf_to_e3nn_shell_order(l)]``.
    """
    if l == 1:
        return CARTESIAN_TO_E3NN.copy()  # (px, py, pz) -> (py, pz, px) = m -1, 0, 1
    return np.arange(2 * l + 1)


def ao_atom_indices(mol: gto.Mole) -> np.ndarray:
    """Atom index of every AO, PySCF order, (nao,)."""
    aoslices = mol.aoslice_by_atom()  # [natm, 4]: shell and AO ranges per atom
    return np.repeat(np.arange(mol.natm), aoslices[:, 3] - aoslices[:, 2])


def check_supported_mol(mol: gto.Mole) -> None:
    """Raise :class:`UnsupportedMoleculeError` for inputs the layout cannot represent."""
    if mol.natm == 0:
        raise ValueError("empty molecule: mol has no atoms")
    if mol.cart:
        raise UnsupportedMoleculeError(
            "Cartesian basis functions (mol.cart=True) are not supported; "
            "qhflow models work in the spherical (real solid harmonic) basis")
    if mol.has_ecp():
        raise UnsupportedMoleculeError(
            "effective core potentials are not supported (mol has an ECP)")
    from pyscf import gto

    charges = mol.atom_charges()
    ghosts = [i for i in range(mol.natm)
              if charges[i] == 0 or gto.is_ghost_atom(mol.atom_symbol(i))]
    if ghosts:
        raise UnsupportedMoleculeError(
            f"ghost atoms are not supported (atoms {ghosts})")


def _atom_shell_ls(mol: gto.Mole, atom: int) -> tuple[int, ...]:
    """Angular momenta of every (contracted) shell of ``atom`` in PySCF AO order."""
    ls: list[int] = []
    for ib in range(mol.nbas):
        if mol.bas_atom(ib) == atom:
            ls.extend([mol.bas_angular(ib)] * mol.bas_nctr(ib))
    return tuple(ls)


@lru_cache(maxsize=256)
def element_shells(symbol: str, basis: str) -> tuple[int, ...]:
    """Angular momenta of an element's shells in ``basis``, in PySCF AO order.

    Read from PySCF's ``mol._bas`` for a one-atom molecule; no basis tables here.
    """
    from pyscf import gto

    z = gto.charge(symbol)
    mol = gto.M(atom=[[symbol, (0.0, 0.0, 0.0)]], basis=basis, spin=z % 2,
                verbose=0)
    return _atom_shell_ls(mol, 0)


@dataclass(frozen=True)
class BasisLayout:
    """Padded per-atom layout for a basis set and a set of elements.

    ``shell_counts[l]`` is the largest number of shells of angular momentum l
    over ``elements``; the padded irreps are ``shell_counts[0] x 0e +
    shell_counts[1] x 1o + ...`` in e3nn's layout (each copy contiguous).
    """

    basis: str
    elements: tuple[int, ...]  # atomic numbers, sorted
    shells: tuple[tuple[int, ...], ...]  # per element: shell l's in PySCF order
    shell_counts: tuple[int, ...]

    @classmethod
    def from_basis(cls, basis: str, elements) -> "BasisLayout":
        from pyscf import gto

        zs = tuple(sorted({int(gto.charge(e)) if isinstance(e, str) else int(e)
                           for e in elements}))
        if not zs:
            raise ValueError("BasisLayout needs at least one element")
        shells = tuple(element_shells(gto.param.ELEMENTS[z], basis) for z in zs)
        lmax = max(max(s) for s in shells)
        counts = tuple(max(s.count(l) for s in shells) for l in range(lmax + 1))
        return cls(str(basis), zs, shells, counts)

    @property
    def lmax(self) -> int:
        return len(self.shell_counts) - 1

    @property
    def irreps_str(self) -> str:
        """Padded per-atom irreps, e.g. ``'3x0e+2x1o+1x2e'`` for def2-SVP HCNOF."""
        return "+".join(f"{n}x{l}{'e' if l % 2 == 0 else 'o'}"
                        for l, n in enumerate(self.shell_counts) if n > 0)

    @property
    def size(self) -> int:
        """Number of padded AO slots per atom."""
        return sum(n * (2 * l + 1) for l, n in enumerate(self.shell_counts))

    def shells_of(self, z: int) -> tuple[int, ...]:
        try:
            return self.shells[self.elements.index(int(z))]
        except ValueError:
            from pyscf import gto
            raise UnsupportedMoleculeError(
                f"element {gto.param.ELEMENTS[int(z)]} (Z={int(z)}) is not in this "
                f"layout's elements {[gto.param.ELEMENTS[e] for e in self.elements]}") from None

    def _shell_start(self, l: int, k: int) -> int:
        start = sum(n * (2 * ll + 1) for ll, n in enumerate(self.shell_counts[:l]))
        return start + k * (2 * l + 1)

    @lru_cache(maxsize=None)
    def element_slots(self, z: int) -> np.ndarray:
        """Padded slot of each of element z's AOs in PySCF AO order, shape (nao_z,)."""
        slots: list[np.ndarray] = []
        seen = [0] * (self.lmax + 1)
        for l in self.shells_of(z):
            start = self._shell_start(l, seen[l])
            seen[l] += 1
            # pyscf m-index j sits at e3nn position inv[j] of the shell
            inv = np.argsort(pyscf_to_e3nn_shell_order(l))
            slots.append(start + inv)
        return np.concatenate(slots)

    @lru_cache(maxsize=None)
    def element_mask(self, z: int) -> np.ndarray:
        """Boolean mask of the padded slots element z uses, shape (size,)."""
        mask = np.zeros(self.size, dtype=bool)
        mask[self.element_slots(z)] = True
        return mask


@dataclass(frozen=True)
class MolLayout:
    """Where every padded slot of every atom of one molecule lives in PySCF AO order.

    ``ao_index[a, s]`` is the PySCF AO index of atom a's padded slot s, or -1
    where the slot is padding.  ``perm`` reorders a dense PySCF matrix into
    e3nn order without padding: ``M_e3nn = M[np.ix_(perm, perm)]``.
    """

    basis_layout: BasisLayout
    atomic_numbers: np.ndarray  # (natm,)
    ao_index: np.ndarray  # (natm, size) int64, -1 for padding
    perm: np.ndarray  # (nao,)
    nao: int
    atom_irreps: tuple[str, ...] = field(repr=False)  # unpadded irreps per atom

    @classmethod
    def from_mol(cls, mol: gto.Mole, basis_layout: BasisLayout | None = None) -> "MolLayout":
        check_supported_mol(mol)
        zs = np.asarray(mol.atom_charges(), dtype=np.int64)
        if basis_layout is None:
            basis_layout = BasisLayout.from_basis(_single_basis_name(mol), set(zs.tolist()))
        aoslices = mol.aoslice_by_atom()
        ao_index = np.full((mol.natm, basis_layout.size), -1, dtype=np.int64)
        perm_parts, irreps = [], []
        for a in range(mol.natm):
            shells = _atom_shell_ls(mol, a)
            if shells != basis_layout.shells_of(zs[a]):
                raise UnsupportedMoleculeError(
                    f"atom {a} ({mol.atom_symbol(a)}) has shells {shells} in mol.basis, "
                    f"but the layout for basis {basis_layout.basis!r} expects "
                    f"{basis_layout.shells_of(zs[a])}")
            p0, p1 = aoslices[a, 2], aoslices[a, 3]
            ao_index[a, basis_layout.element_slots(zs[a])] = np.arange(p0, p1)
            off = p0
            for l in shells:
                perm_parts.append(off + pyscf_to_e3nn_shell_order(l))
                off += 2 * l + 1
            irreps.append("+".join(f"1x{l}{'e' if l % 2 == 0 else 'o'}" for l in shells))
        perm = np.concatenate(perm_parts)
        return cls(basis_layout, zs, ao_index, perm, int(mol.nao_nr()), tuple(irreps))

    @classmethod
    def from_atomic_numbers(cls, atomic_numbers, basis_layout: BasisLayout) -> "MolLayout":
        """Layout of a molecule given only its atomic numbers (AOs atom by atom, as PySCF)."""
        zs = np.asarray(atomic_numbers, dtype=np.int64)
        if zs.size == 0:
            raise ValueError("empty molecule: no atomic numbers")
        ao_index = np.full((len(zs), basis_layout.size), -1, dtype=np.int64)
        perm_parts, irreps = [], []
        off = 0
        for a, z in enumerate(zs):
            shells = basis_layout.shells_of(z)
            slots = basis_layout.element_slots(z)
            ao_index[a, slots] = off + np.arange(len(slots))
            for l in shells:
                perm_parts.append(off + pyscf_to_e3nn_shell_order(l))
                off += 2 * l + 1
            irreps.append("+".join(f"1x{l}{'e' if l % 2 == 0 else 'o'}" for l in shells))
        return cls(basis_layout, zs, ao_index, np.concatenate(perm_parts), off, tuple(irreps))

    @property
    def natm(self) -> int:
        return len(self.atomic_numbers)

    @property
    def mask(self) -> np.ndarray:
        """(natm, size) bool: which padded slots hold a real AO."""
        return self.ao_index >= 0

    @property
    def inverse_perm(self) -> np.ndarray:
        return np.argsort(self.perm)

    def to_e3nn(self, matrix):
        """Dense (..., nao, nao) matrix, PySCF order -> e3nn order (numpy or torch)."""
        p = self.perm
        return matrix[..., p, :][..., :, p]

    def to_pyscf(self, matrix):
        """Dense (..., nao, nao) matrix, e3nn order -> PySCF order (numpy or torch)."""
        q = self.inverse_perm
        return matrix[..., q, :][..., :, q]

    def wigner_D(self, rotation: np.ndarray) -> np.ndarray:
        """Block-diagonal (nao, nao) Wigner-D for a 3x3 orthogonal matrix, e3nn order.

        For positions rotated as ``r' = r @ rotation.T`` a matrix in this
        basis transforms as ``M' = D M D^T`` (reflections included through
        the parity of each l).
        """
        import scipy.linalg
        import torch

        from .nn.so3 import irreps_wigner_D

        rot = torch.as_tensor(rotation_to_e3nn(np.asarray(rotation, dtype=np.float64)))
        return scipy.linalg.block_diag(*[irreps_wigner_D(ir, rot).numpy()
                                         for ir in self.atom_irreps])


def _single_basis_name(mol: gto.Mole) -> str:
    """The basis name of ``mol`` when one named basis is used for every atom."""
    basis = mol.basis
    if isinstance(basis, str):
        return basis
    if isinstance(basis, dict):
        names = {v for v in basis.values()}
        if len(names) == 1 and isinstance(next(iter(names)), str):
            return next(iter(names))
    raise UnsupportedMoleculeError(
        "a per-atom or custom basis needs an explicit BasisLayout; "
        f"mol.basis is {basis!r}")
