"""Property-based checks (hypothesis) of the layout round trips and of the Wigner-D."""
from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pyscf_qhflow.aolayout import BasisLayout, MolLayout, rotation_to_e3nn
from pyscf_qhflow.blocks import (all_pairs, assemble_blocks, reverse_pair_index,
                                 split_blocks, symmetrize_blocks)
from pyscf_qhflow.nn.so3 import irreps_wigner_D, wigner_D

LAYOUT = BasisLayout.from_basis("def2-svp", [1, 6, 7, 8, 9])
molecules = st.lists(st.sampled_from([1, 6, 7, 8, 9]), min_size=1, max_size=7)


@settings(max_examples=40, deadline=None)
@given(zs=molecules, seed=st.integers(0, 2**31 - 1))
def test_split_assemble_round_trip(zs, seed):
    lay = MolLayout.from_atomic_numbers(zs, LAYOUT)
    m = np.random.default_rng(seed).normal(size=(lay.nao, lay.nao))
    on, off = split_blocks(m, lay)
    np.testing.assert_array_equal(assemble_blocks(on, off, lay), m)
    np.testing.assert_array_equal(lay.to_pyscf(lay.to_e3nn(m)), m)
    # padding is exactly zero, real slots hold every matrix element once
    assert not on[~np.broadcast_to(lay.mask[:, :, None] & lay.mask[:, None, :], on.shape)].any()
    assert np.count_nonzero(lay.mask) == lay.nao


@settings(max_examples=40, deadline=None)
@given(zs=molecules, seed=st.integers(0, 2**31 - 1))
def test_symmetrized_blocks_assemble_to_a_symmetric_matrix(zs, seed):
    lay = MolLayout.from_atomic_numbers(zs, LAYOUT)
    pairs = all_pairs(len(zs))
    rng = np.random.default_rng(seed)
    perm = rng.permutation(pairs.shape[1])  # any pair order: reverse pairs found by index
    pairs = pairs[:, perm]
    on, off = split_blocks(rng.normal(size=(lay.nao, lay.nao)), lay, pairs)
    on, off = symmetrize_blocks(on, off, pairs)
    m = assemble_blocks(on, off, lay, pairs)
    np.testing.assert_allclose(m, m.T, atol=1e-15)
    if pairs.shape[1]:
        np.testing.assert_array_equal(pairs[:, reverse_pair_index(pairs)], pairs[::-1])


rotations = st.tuples(st.floats(-np.pi, np.pi), st.floats(0, np.pi), st.floats(-np.pi, np.pi),
                      st.booleans())


def _matrix(a, b, c, reflect):
    from e3nn import o3
    r = o3.angles_to_matrix(*(torch.tensor(x, dtype=torch.float64) for x in (a, b, c)))
    return -r if reflect else r


@settings(max_examples=30, deadline=None)
@given(rot=rotations, l=st.integers(0, 4))
def test_wigner_d_is_an_orthogonal_representation(rot, l):
    r1 = _matrix(*rot)
    r2 = _matrix(0.3, 1.1, -0.4, False)
    d1, d2, d12 = wigner_D(l, r1), wigner_D(l, r2), wigner_D(l, r1 @ r2)
    eye = torch.eye(2 * l + 1, dtype=torch.float64)
    torch.testing.assert_close(d1 @ d1.T, eye, atol=1e-12, rtol=0)
    torch.testing.assert_close(d1 @ d2, d12, atol=1e-12, rtol=0)
    # parity of the AO polynomials: inversion acts as (-1)^l
    torch.testing.assert_close(wigner_D(l, -torch.eye(3, dtype=torch.float64)),
                               (-1) ** l * eye, atol=1e-12, rtol=0)


def test_padded_wigner_d_matches_layout_wigner_d():
    lay = MolLayout.from_atomic_numbers([8, 1, 6], LAYOUT)
    rot = _matrix(0.2, 2.0, 1.0, True).numpy()
    d_full = lay.wigner_D(rot)  # e3nn order, unpadded
    d_pad = irreps_wigner_D(LAYOUT.irreps_str, torch.as_tensor(rotation_to_e3nn(rot))).numpy()
    m = np.random.default_rng(0).normal(size=(lay.nao, lay.nao))
    on, off = split_blocks(m, lay)
    rotated = lay.to_pyscf(d_full @ lay.to_e3nn(m) @ d_full.T)
    on_r, off_r = split_blocks(rotated, lay)
    np.testing.assert_allclose(on_r, d_pad @ on @ d_pad.T, atol=1e-12)
    np.testing.assert_allclose(off_r, d_pad @ off @ d_pad.T, atol=1e-12)
