"""Flow matching (interpolant, prior, Euler sampler) and the batch builder."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pyscf_qhflow import keys
from pyscf_qhflow.aolayout import BasisLayout, MolLayout, rotation_to_e3nn
from pyscf_qhflow.batching import block_masks, collate, make_batch, prepare_record, unbatch_fock
from pyscf_qhflow.flow import (FlowConfig, euler_sample, interpolate, sample_prior,
                               sample_time)
from pyscf_qhflow.nn.so3 import irreps_wigner_D

LAYOUT = BasisLayout.from_basis("def2-svp", [1, 6, 7, 8, 9])


def random_record(zs, seed, spacing=1.4):
    """Random symmetric 'hinit'/'overlap'/'fock' for atoms on a jittered line (Angstrom)."""
    rng = np.random.default_rng(seed)
    zs = np.asarray(zs)
    pos = np.zeros((len(zs), 3))
    pos[:, 0] = spacing * np.arange(len(zs))
    pos += 0.2 * rng.standard_normal(pos.shape)
    nao = MolLayout.from_atomic_numbers(zs, LAYOUT).nao

    def sym():
        a = rng.standard_normal((nao, nao))
        return a + a.T

    return {"Z": zs, "pos": pos, "hinit": sym(), "overlap": sym(), "fock": sym()}


def random_rotation(seed):
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    return q * np.sign(np.linalg.det(q))


# ------------------------------------------------------------------ batching

def test_split_batch_unbatch_round_trip_is_exact():
    recs = [random_record([8, 1, 1], 0), random_record([6, 1, 1, 1, 1], 1),
            random_record([7, 9, 1], 2)]
    batch, info = make_batch(recs, LAYOUT, cutoff=5.0, pair_cutoff=100.0,
                             dtype=torch.float64)
    for name in ("hinit", "fock"):
        on = batch[keys.HINIT_ONSITE] if name == "hinit" else batch[keys.FOCK_ONSITE]
        off = batch[keys.HINIT_OFFSITE] if name == "hinit" else batch[keys.FOCK_OFFSITE]
        dense = unbatch_fock(on, off, info)
        for rec, d in zip(recs, dense):
            assert d.dtype == np.float64
            np.testing.assert_array_equal(d, rec[name])
    residual = unbatch_fock(batch[keys.RESIDUAL_ONSITE], batch[keys.RESIDUAL_OFFSITE], info)
    for rec, r in zip(recs, residual):
        np.testing.assert_array_equal(r, rec["fock"] - rec["hinit"])


def test_batch_equals_single():
    recs = [random_record([8, 1, 1], 3), random_record([6, 6, 1, 1, 1, 1], 4)]
    batch, info = make_batch(recs, LAYOUT, 2.0, 4.0, dtype=torch.float64)
    n0 = len(recs[0]["Z"])
    assert torch.equal(batch[keys.BATCH], torch.tensor([0] * n0 + [1] * len(recs[1]["Z"])))
    for b, rec in enumerate(recs):
        single, _ = make_batch([rec], LAYOUT, 2.0, 4.0, dtype=torch.float64)
        sa, sp = info.atom_slices[b], info.pair_slices[b]
        for key in (keys.HINIT_ONSITE, keys.OVERLAP_ONSITE, keys.SLOT_MASK, keys.POS, keys.Z):
            assert torch.equal(batch[key][sa], single[key])
        assert torch.equal(batch[keys.HINIT_OFFSITE][sp], single[keys.HINIT_OFFSITE])
        assert torch.equal(batch[keys.PAIR_INDEX][:, sp] - sa.start, single[keys.PAIR_INDEX])
    # edges never cross molecules
    e = batch[keys.EDGE_INDEX]
    assert torch.equal(batch[keys.BATCH][e[0]], batch[keys.BATCH][e[1]])


def test_edge_and_pair_lists_are_independent_and_cut():
    rec = random_record([6, 6, 6, 6, 6], 5, spacing=2.0)  # neighbours ~2 A apart
    batch, info = make_batch([rec], LAYOUT, cutoff=2.5, pair_cutoff=4.5, dtype=torch.float64)
    d = np.linalg.norm(rec["pos"][:, None] - rec["pos"][None], axis=-1)
    e, p = batch[keys.EDGE_INDEX].numpy(), batch[keys.PAIR_INDEX].numpy()
    assert np.all(d[e[0], e[1]] < 2.5) and np.all(d[p[0], p[1]] < 4.5)
    assert e.shape[1] == int(((d < 2.5) & (d > 0)).sum())
    assert p.shape[1] == int(((d < 4.5) & (d > 0)).sum()) > e.shape[1]
    dense = unbatch_fock(batch[keys.HINIT_ONSITE], batch[keys.HINIT_OFFSITE], info)[0]
    lay = info.layouts[0]
    a0 = lay.ao_index[0][lay.ao_index[0] >= 0]
    a4 = lay.ao_index[4][lay.ao_index[4] >= 0]
    assert np.all(dense[np.ix_(a0, a4)] == 0)  # atoms 0 and 4 are ~8 A apart: no block


def test_collate_without_fock_and_empty_input():
    rec = random_record([1, 1], 6)
    del rec["fock"]
    batch, _ = collate([prepare_record(rec, LAYOUT, 5.0, 15.0)])
    assert keys.FOCK_ONSITE not in batch and batch[keys.HINIT_ONSITE].dtype == torch.float32
    with pytest.raises(ValueError, match="at least one"):
        collate([])
    with pytest.raises(KeyError, match="overlap"):
        prepare_record({"Z": [1], "pos": [[0, 0, 0]], "hinit": np.eye(5)}, LAYOUT, 5.0, 15.0)


# ------------------------------------------------------------------ flow

def _blocks(seed, n=5, k=8, p=14):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, p, p, generator=g, dtype=torch.float64),
            torch.randn(k, p, p, generator=g, dtype=torch.float64))


@pytest.mark.parametrize("num_steps", [0, 1, 2, 5, 17])
def test_euler_with_perfect_predictor_returns_endpoint_exactly(num_steps):
    x1 = _blocks(0)
    x0 = _blocks(1)
    out = euler_sample(lambda x, t: x1, x0, num_molecules=2, num_steps=num_steps)
    assert torch.equal(out[0], x1[0]) and torch.equal(out[1], x1[1])


def test_euler_follows_the_interpolant():
    """With the true endpoint, every Euler state lies on the straight path x_t."""
    x1, x0 = _blocks(2), _blocks(3)
    batch = torch.tensor([0, 0, 0, 1, 1])
    pairs = torch.tensor([[0, 1, 0, 2, 1, 2, 3, 4], [1, 0, 2, 0, 2, 1, 4, 3]])
    seen = []

    def predictor(x, t):
        seen.append((x, t.clone()))
        return x1

    euler_sample(predictor, x0, num_molecules=2, num_steps=4)
    assert [float(t[0]) for _, t in seen] == [0.0, 0.25, 0.5, 0.75]
    for x, t in seen:
        ref = interpolate(x0, x1, t, batch, pairs)
        torch.testing.assert_close(x[0], ref[0], rtol=0, atol=1e-12)
        torch.testing.assert_close(x[1], ref[1], rtol=0, atol=1e-12)


def test_interpolate_uses_each_molecules_time():
    x0 = (torch.zeros(3, 2, 2), torch.zeros(2, 2, 2))
    x1 = (torch.ones(3, 2, 2), torch.ones(2, 2, 2))
    batch = torch.tensor([0, 0, 1])
    pairs = torch.tensor([[0, 1], [1, 0]])
    on, off = interpolate(x0, x1, torch.tensor([0.25, 0.75]), batch, pairs)
    assert torch.equal(on[:, 0, 0], torch.tensor([0.25, 0.25, 0.75]))
    assert torch.equal(off[:, 0, 0], torch.tensor([0.25, 0.25]))


def test_sample_time_options():
    g = torch.Generator().manual_seed(0)
    t = sample_time(1000, FlowConfig(), g)
    assert t.shape == (1000,) and float(t.min()) >= 0 and float(t.max()) < 1
    t = sample_time(1000, FlowConfig(time_sampling="logit_normal", logit_mean=1.0), g)
    assert float(t.min()) > 0 and float(t.max()) < 1 and abs(float(t.median()) - 0.731) < 0.05
    assert torch.equal(sample_time(4, FlowConfig(objective="regression"), g), torch.zeros(4))


def test_flow_config_rejects_unknown_and_bad_values():
    with pytest.raises(ValueError, match="prior_scal"):
        FlowConfig.from_dict({"prior_scal": 0.1})
    with pytest.raises(ValueError, match="time_sampling"):
        FlowConfig(time_sampling="beta")
    with pytest.raises(ValueError, match="num_steps"):
        FlowConfig(num_steps=-1)
    assert FlowConfig.from_dict(FlowConfig(num_steps=3).to_dict()) == FlowConfig(num_steps=3)


def test_prior_is_symmetric_masked_and_scaled():
    recs = [random_record([8, 1, 1], 7), random_record([6, 1, 1, 1, 1], 8)]
    batch, info = make_batch(recs, LAYOUT, 5.0, 15.0, dtype=torch.float64)
    mask, pairs = batch[keys.SLOT_MASK], batch[keys.PAIR_INDEX]
    on, off = sample_prior(mask, pairs, LAYOUT.irreps_str, 0.3, torch.Generator().manual_seed(0), torch.float64)
    m_on, m_off = block_masks(mask, pairs)
    assert torch.all(on[~m_on] == 0) and torch.all(off[~m_off] == 0)
    for dense in unbatch_fock(on, off, info):
        np.testing.assert_array_equal(dense, dense.T)
    # diagonal entries of on-site blocks keep the full variance prior_scale^2
    diag = torch.diagonal(on, dim1=-2, dim2=-1)[mask]
    assert abs(float(diag.std()) - 0.3) < 0.1


def test_prior_is_rotation_invariant_in_law():
    """Cov(vec D B D^T) = Cov(vec B) for on-site and off-site prior blocks."""
    rec = random_record([6, 8], 9)  # C and O fill every padded slot of def2-SVP
    batch, _ = make_batch([rec], LAYOUT, 5.0, 15.0, dtype=torch.float64)
    mask, pairs = batch[keys.SLOT_MASK], batch[keys.PAIR_INDEX]
    assert bool(mask.all())
    n = 20000
    g = torch.Generator().manual_seed(1)
    mask_n = mask.repeat(n, 1)  # n independent copies of the molecule
    pairs_n = (pairs[:, None, :] + 2 * torch.arange(n)[None, :, None]).reshape(2, -1)
    on, off = sample_prior(mask_n, pairs_n, LAYOUT.irreps_str, 1.0, g, torch.float64)
    rot = torch.as_tensor(rotation_to_e3nn(random_rotation(0)))
    d = irreps_wigner_D(LAYOUT.irreps_str, rot)  # [P, P]
    assert not torch.allclose(d, torch.eye(14, dtype=torch.float64), atol=0.1)
    for blocks in (on[0::2], off[0::2]):
        x = blocks.reshape(n, -1)
        xr = (d @ blocks @ d.T).reshape(n, -1)
        cov, cov_r = x.T @ x / n, xr.T @ xr / n
        assert float((cov - cov_r).abs().max()) < 0.08
        # and the covariance is not trivial: symmetrisation couples (a, b) and (b, a)
        assert float(cov.diagonal().min()) > 0.4


def test_prior_expands_gaussian_irreps_with_the_orthogonal_cg_basis():
    """The prior's Q (from the readout) is orthogonal, so irreps draws stay isotropic."""
    from pyscf_qhflow.nn.readout import block_change_of_basis
    irreps_out, q, _ = block_change_of_basis(LAYOUT.irreps_str)
    assert irreps_out.dim == LAYOUT.size ** 2
    torch.testing.assert_close(q @ q.T, torch.eye(q.shape[0], dtype=torch.float64),
                               rtol=0, atol=1e-12)
