"""AO layout and blocks: round trips and the rotation behaviour of real AO matrices."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from pyscf import gto, scf

from pyscf_qhflow.aolayout import (BasisLayout, MolLayout, UnsupportedMoleculeError,
                                   element_shells, pyscf_to_e3nn_shell_order)
from pyscf_qhflow.blocks import (all_pairs, assemble_blocks, reverse_pair_index,
                                 split_blocks, symmetrize_blocks)

from conftest import example_mol


def random_rotation(rng, reflect=False) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return -q if reflect else q


def rotated(mol: gto.Mole, rot: np.ndarray) -> gto.Mole:
    new = mol.copy()
    new.set_geom_(mol.atom_coords() @ rot.T, unit="Bohr")
    assert np.abs(new.atom_coords() - mol.atom_coords()).max() > 1e-2  # it moved
    return new


def test_element_shells_from_pyscf():
    # def2-SVP: H 2s1p, C/N/O/F 3s2p1d, read from mol._bas, not from a table
    assert element_shells("H", "def2-svp") == (0, 0, 1)
    assert element_shells("O", "def2-svp") == (0, 0, 0, 1, 1, 2)
    lay = BasisLayout.from_basis("def2-svp", [1, 6, 7, 8, 9])
    assert lay.irreps_str == "3x0e+2x1o+1x2e" and lay.size == 14


def test_p_shell_is_the_only_permutation():
    assert list(pyscf_to_e3nn_shell_order(1)) == [1, 2, 0]
    for l in (0, 2, 3, 4):
        assert list(pyscf_to_e3nn_shell_order(l)) == list(range(2 * l + 1))


@pytest.mark.parametrize("name", ["water", "methane", "fluoroacetamide"])
def test_split_assemble_identity(name):
    mol = example_mol(name)
    lay = MolLayout.from_mol(mol, BasisLayout.from_basis("def2-svp", [1, 6, 7, 8, 9]))
    rng = np.random.default_rng(0)
    m = rng.normal(size=(2, mol.nao, mol.nao))  # batched, non-symmetric
    on, off = split_blocks(m, lay)
    assert on.shape == (2, mol.natm, 14, 14)
    assert off.shape == (2, mol.natm * (mol.natm - 1), 14, 14)
    np.testing.assert_array_equal(assemble_blocks(on, off, lay), m)
    ton, toff = split_blocks(torch.as_tensor(m), lay)
    np.testing.assert_array_equal(ton.numpy(), on)
    np.testing.assert_array_equal(assemble_blocks(ton, toff, lay).numpy(), m)
    # padding slots are zero and the e3nn order puts an H p shell at slots 3..5
    h = next(a for a in range(mol.natm) if mol.atom_charge(a) == 1)
    assert np.all(on[:, h][:, ~lay.mask[h]] == 0)
    p0 = mol.aoslice_by_atom()[h, 2] + 2  # pyscf px of H's p shell
    assert list(lay.ao_index[h, 3:6]) == [p0 + 1, p0 + 2, p0]


def test_pyscf_e3nn_round_trip(fluoroacetamide):
    lay = MolLayout.from_mol(fluoroacetamide)
    m = np.random.default_rng(1).normal(size=(fluoroacetamide.nao,) * 2)
    np.testing.assert_array_equal(lay.to_pyscf(lay.to_e3nn(m)), m)
    assert sorted(lay.perm) == list(range(fluoroacetamide.nao))


def test_from_atomic_numbers_matches_from_mol(fluoroacetamide):
    a = MolLayout.from_mol(fluoroacetamide)
    b = MolLayout.from_atomic_numbers(fluoroacetamide.atom_charges(), a.basis_layout)
    np.testing.assert_array_equal(a.ao_index, b.ao_index)
    np.testing.assert_array_equal(a.perm, b.perm)


def test_symmetrize_and_reverse_pairs():
    pairs = all_pairs(4)[:, ::-1].copy()  # reversed ordering: lookup must not care
    rev = reverse_pair_index(pairs)
    np.testing.assert_array_equal(pairs[:, rev], pairs[::-1])
    rng = np.random.default_rng(2)
    on, off = symmetrize_blocks(rng.normal(size=(4, 3, 3)), rng.normal(size=(12, 3, 3)), pairs)
    np.testing.assert_allclose(on, on.swapaxes(-1, -2))
    np.testing.assert_allclose(off, off[rev].swapaxes(-1, -2))
    with pytest.raises(ValueError, match="not closed under reversal"):
        reverse_pair_index(pairs[:, 1:])


def _matrices(mol):
    hcore = mol.intor("int1e_kin") + mol.intor("int1e_nuc")
    mf = scf.RHF(mol)
    # HF Fock of a fixed, rotation-covariant density: the core-Hamiltonian guess
    dm = mf.init_guess_by_1e()
    return {"overlap": mol.intor("int1e_ovlp"), "hcore": hcore, "fock_hf": mf.get_fock(dm=dm)}


@pytest.mark.parametrize("name", ["water", "methane", "fluoroacetamide"])
@pytest.mark.parametrize("reflect", [False, True])
def test_matrices_rotate_with_wigner_d(name, reflect):
    """S, h and the HF Fock of the rotated molecule equal D M D^T in e3nn order."""
    mol = example_mol(name)
    lay = MolLayout.from_mol(mol)
    rot = random_rotation(np.random.default_rng(hash(name) % 1000), reflect)
    d = lay.wigner_D(rot)
    np.testing.assert_allclose(d @ d.T, np.eye(mol.nao), atol=1e-12)
    ref, new = _matrices(mol), _matrices(rotated(mol, rot))
    for key in ref:
        expected = d @ lay.to_e3nn(ref[key]) @ d.T
        np.testing.assert_allclose(lay.to_e3nn(new[key]), expected, atol=1e-8, err_msg=key)


def test_higher_l_wigner_d():
    """f and g shells (cc-pVQZ) follow e3nn's Wigner-D too: d, f, g need no permutation."""
    mol = gto.M(atom="O 0 0 0.1; H 0.75 0.1 -0.5; H -0.7 0.2 -0.45", basis="cc-pvqz",
                verbose=0)
    lay = MolLayout.from_mol(mol)
    assert lay.basis_layout.lmax == 4
    rot = random_rotation(np.random.default_rng(5))
    s0 = mol.intor("int1e_ovlp")
    s1 = rotated(mol, rot).intor("int1e_ovlp")
    d = lay.wigner_D(rot)
    np.testing.assert_allclose(lay.to_e3nn(s1), d @ lay.to_e3nn(s0) @ d.T, atol=1e-9)


def test_rejects_cartesian_ecp_ghost():
    with pytest.raises(UnsupportedMoleculeError, match="Cartesian"):
        MolLayout.from_mol(gto.M(atom="H 0 0 0; H 0 0 0.74", basis="def2-svp", cart=True,
                                 verbose=0))
    with pytest.raises(UnsupportedMoleculeError, match="effective core"):
        MolLayout.from_mol(gto.M(atom="I 0 0 0; H 0 0 1.6", basis="def2-svp",
                                 ecp="def2-svp", verbose=0))
    with pytest.raises(UnsupportedMoleculeError, match="ghost"):
        MolLayout.from_mol(gto.M(atom="H 0 0 0; H 0 0 0.74; ghost-O 0 1 0", basis="def2-svp",
                                 verbose=0))


def test_unknown_element_and_mismatched_basis():
    lay = BasisLayout.from_basis("def2-svp", [1, 6, 7, 8, 9])
    with pytest.raises(UnsupportedMoleculeError, match="element S"):
        MolLayout.from_mol(gto.M(atom="S 0 0 0; H 0 0 1.3; H 0 1.3 0", basis="def2-svp",
                                 verbose=0), lay)
    with pytest.raises(UnsupportedMoleculeError, match="shells"):
        MolLayout.from_mol(gto.M(atom="H 0 0 0; H 0 0 0.74", basis="sto-3g", verbose=0), lay)
