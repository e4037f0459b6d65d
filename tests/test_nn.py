"""The equivariant network: layout converter, CG change of basis, symmetries, dtypes, config."""
from __future__ import annotations

import copy
import dataclasses
import time

import pytest
import torch
from e3nn import o3

from pyscf_qhflow import keys
from pyscf_qhflow.aolayout import BasisLayout, MolLayout, rotation_to_e3nn
from pyscf_qhflow.blocks import assemble_blocks
from pyscf_qhflow.nn.net import NET_PRESETS, NetConfig, QHFlowNet
from pyscf_qhflow.blocks import reverse_pair_index
from pyscf_qhflow.nn.readout import block_change_of_basis, block_invariants_matrix
from pyscf_qhflow.nn.so3 import (e3nn_to_escn, escn_irreps, escn_to_e3nn, irreps_wigner_D,
                                 parity_irreps_wigner_D)

from symmetry import (check_batch_vs_single, check_orthogonal_equivariance,
                      check_permutation, check_translation, make_batch, random_orthogonal)

IRREPS = "3x0e+2x1o+1x2e"
SCALE = 0.01
TINY = dict(NET_PRESETS["tiny"], cutoff=3.0, pair_cutoff=15.0, output_scale=SCALE)


@pytest.fixture(scope="module")
def layout():
    return BasisLayout.from_basis("def2-svp", [1, 6, 7, 8, 9])


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return QHFlowNet(NetConfig(**TINY)).double().eval()


@pytest.fixture(scope="module")
def batch(layout):
    # box wider than the backbone cutoff: edge_index is a strict subset of pair_index
    b = make_batch([[6, 1, 8, 7, 1, 1, 6]], layout, TINY["cutoff"], TINY["pair_cutoff"],
                   seed=3, box=4.5)
    assert b[keys.EDGE_INDEX].shape[1] < b[keys.PAIR_INDEX].shape[1]
    return b


def model_fn(net):
    def f(b):
        with torch.no_grad():
            return net(b)
    return f


def random_rotation_e3nn(seed, reflect):
    return torch.as_tensor(rotation_to_e3nn(random_orthogonal(seed, reflect)))


# ------------------------------------------------------------- layout converter
def test_escn_e3nn_converter_round_trip():
    lmax, c = 3, 5
    x = torch.randn(7, (lmax + 1) ** 2, 2, c, dtype=torch.float64)
    y = escn_to_e3nn(x)
    assert y.shape == (7, escn_irreps(lmax, c).dim)
    assert torch.equal(e3nn_to_escn(y, lmax, c), x)
    # per irrep the e3nn layout is [mul, 2l+1]: l = 1 natural channel 2 sits at 2*C + 3*2
    assert torch.equal(y[:, 2 * c + 3 * 2: 2 * c + 3 * 3], x[:, 1:4, 0, 2])
    x1 = x[:, :, :1]
    assert torch.equal(e3nn_to_escn(escn_to_e3nn(x1), lmax, c, n_class=1), x1)
    with pytest.raises(ValueError):
        e3nn_to_escn(y[:, :-1], lmax, c)


@pytest.mark.parametrize("reflect", [False, True])
def test_linear_through_converter_is_equivariant(reflect):
    lmax, c = 4, 3
    irreps = escn_irreps(lmax, c)
    lin = o3.Linear(irreps, irreps).double()
    rot = random_rotation_e3nn(11, reflect)
    d = parity_irreps_wigner_D(irreps, rot)
    x = torch.randn(4, (lmax + 1) ** 2, 2, c, dtype=torch.float64)
    xr = e3nn_to_escn(escn_to_e3nn(x) @ d.T, lmax, c)  # rotate in e3nn layout
    out = e3nn_to_escn(lin(escn_to_e3nn(xr)), lmax, c)
    expect = e3nn_to_escn(lin(escn_to_e3nn(x)) @ d.T, lmax, c)
    assert torch.allclose(out, expect, atol=1e-12)
    # the pseudo class really flips under reflection
    flip = torch.linalg.det(rot) < 0
    assert torch.allclose(xr[:, 0, 1], -x[:, 0, 1] if flip else x[:, 0, 1])


# ------------------------------------------------------------- CG change of basis
def test_block_change_of_basis_is_orthogonal_and_exact():
    irreps, q, copies = block_change_of_basis(IRREPS)
    assert str(irreps) == "14x0e+16x1o+5x1e+11x2e+4x2o+4x3o+1x3e+1x4e"
    assert q.shape == (196, 196) and copies.shape == (196,)
    assert torch.allclose(q @ q.T, torch.eye(196, dtype=torch.float64), atol=1e-12)
    a = torch.randn(14, 14, dtype=torch.float64)
    sym = a + a.T
    feats = sym.reshape(-1) @ q.T
    assert torch.allclose((feats @ q).reshape(14, 14), sym, atol=1e-12)
    # a symmetric block has no antisymmetric part: the (1x1)->1e and (2x2)->1e,3e pieces vanish
    pseudo_l1 = slice(14 + 16 * 3, 14 + 16 * 3 + 5 * 3)
    assert float(feats[pseudo_l1][-3:].abs().max()) < 1e-12  # the (2x2) 1e copy


@pytest.mark.parametrize("reflect", [False, True])
def test_block_change_of_basis_is_equivariant(reflect):
    irreps, q, _ = block_change_of_basis(IRREPS)
    rot = random_rotation_e3nn(5, reflect)
    d_block = irreps_wigner_D(IRREPS, rot)
    d_feat = parity_irreps_wigner_D(irreps, rot)
    b = torch.randn(3, 14, 14, dtype=torch.float64)
    lhs = (d_block @ b @ d_block.T).reshape(3, -1) @ q.T
    rhs = (b.reshape(3, -1) @ q.T) @ d_feat.T
    assert torch.allclose(lhs, rhs, atol=1e-12)


def test_block_invariants_are_traces():
    t = block_invariants_matrix(IRREPS)
    assert t.shape == (14, 196)
    b = torch.randn(14, 14, dtype=torch.float64)
    inv = b.reshape(-1) @ t.T
    assert torch.isclose(inv[0], b[0, 0])  # s1-s1
    assert torch.isclose(inv[9], b[3:6, 3:6].trace())  # p1-p1
    assert torch.isclose(inv[13], b[9:14, 9:14].trace())  # d-d


def test_reverse_pair_index_by_lookup():
    pairs = torch.tensor([[0, 2, 1, 0, 2, 1], [1, 0, 2, 2, 1, 0]])
    rev = reverse_pair_index(pairs)
    assert torch.equal(pairs[:, rev], pairs.flip(0))
    with pytest.raises(ValueError, match="reversal"):
        reverse_pair_index(pairs[:, :5])


# ------------------------------------------------------------- network symmetries
def test_output_magnitude_and_padding(net, batch):
    on, off = model_fn(net)(batch)
    p = 14
    assert on.shape == (7, p, p) and off.shape == (batch[keys.PAIR_INDEX].shape[1], p, p)
    for blk in (on, off):
        rel = float(blk.abs().mean()) / SCALE
        assert 1e-3 < rel < 10.0, rel
    mask = batch[keys.SLOT_MASK]
    assert float(on[~(mask[:, :, None] & mask[:, None, :])].abs().max()) == 0.0
    pi = batch[keys.PAIR_INDEX]
    assert float(off[~(mask[pi[0]][:, :, None] & mask[pi[1]][:, None, :])].abs().max()) == 0.0


@pytest.mark.parametrize("reflect", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_orthogonal_equivariance(net, batch, seed, reflect):
    err = check_orthogonal_equivariance(model_fn(net), batch, IRREPS,
                                        random_orthogonal(seed, reflect), SCALE)
    assert err < 1e-6, err


def test_permutation_and_translation(net, batch):
    assert check_permutation(model_fn(net), batch, seed=4, scale=SCALE) < 1e-10
    assert check_translation(model_fn(net), batch, (3.0, -1.0, 7.5), SCALE) < 1e-8


def test_batch_equals_single(net, layout):
    b = make_batch([[8, 1, 1, 6], [7, 1, 1, 1, 6, 9]], layout, TINY["cutoff"],
                   TINY["pair_cutoff"], seed=5)
    assert check_batch_vs_single(model_fn(net), b, SCALE) < 1e-10
    # the time of molecule 1 must not leak into molecule 0
    on, _ = model_fn(net)(b)
    b2 = dict(b)
    b2[keys.T] = b[keys.T].clone()
    b2[keys.T][1] = 1.0 - b[keys.T][1]
    on2, _ = model_fn(net)(b2)
    first = b[keys.BATCH] == 0
    assert torch.equal(on[first], on2[first]) and not torch.allclose(on[~first], on2[~first])


def test_assembled_matrix_is_exactly_symmetric(net, batch, layout):
    on, off = model_fn(net)(batch)
    mol_layout = MolLayout.from_atomic_numbers(batch[keys.Z].numpy(), layout)
    pairs = batch[keys.PAIR_INDEX].numpy()
    dense = assemble_blocks(on, off, mol_layout, pairs)
    assert torch.equal(dense, dense.T)
    assert float(dense.abs().max()) > 0


def test_chunking_does_not_change_result(net, batch):
    small = copy.deepcopy(net)  # same weights, tiny chunks
    small.cfg = dataclasses.replace(net.cfg, edge_chunk=5, pair_chunk=7)
    small.pair.pair_chunk = 7
    on, off = model_fn(net)(batch)
    on_c, off_c = model_fn(small)(batch)
    assert torch.allclose(on, on_c, atol=1e-14) and torch.allclose(off, off_c, atol=1e-14)


def test_float32_and_gradients(net, batch):
    net32 = copy.deepcopy(net).float()
    b32 = {k: (v.float() if v.is_floating_point() else v) for k, v in batch.items()}
    on32, off32 = net32(b32)
    assert on32.dtype == torch.float32
    on, off = model_fn(net)(batch)
    assert float((on32.detach().double() - on).abs().max()) / SCALE < 1e-3
    assert float((off32.detach().double() - off).abs().max()) / SCALE < 1e-3
    loss = on32.pow(2).sum() + off32.pow(2).sum()
    loss.backward()
    grads = [p.grad for p in net32.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_unknown_element_and_wrong_layout(net, batch):
    bad = dict(batch)
    bad[keys.Z] = batch[keys.Z].clone()
    bad[keys.Z][0] = 16
    with pytest.raises(ValueError, match="not among the model's elements"):
        net(bad)
    bad = dict(batch)
    bad[keys.SLOT_MASK] = batch[keys.SLOT_MASK][:, :10]
    with pytest.raises(ValueError, match="padded slots"):
        net(bad)
    bad = {k: v for k, v in batch.items() if k != keys.T}
    with pytest.raises(KeyError, match="t"):
        net(bad)


def test_single_atom_molecule(net, layout):
    b = make_batch([[8]], layout, TINY["cutoff"], TINY["pair_cutoff"], seed=1)
    on, off = model_fn(net)(b)
    assert on.shape == (1, 14, 14) and off.shape == (0, 14, 14)
    assert torch.isfinite(on).all()


# ------------------------------------------------------------- config
def test_config_rejects_unknown_keys():
    with pytest.raises(ValueError, match="chanels"):
        NetConfig.from_dict({"chanels": 8})
    with pytest.raises(TypeError):
        NetConfig(chanels=8)
    cfg = NetConfig.from_dict(dict(TINY, elements=[1, 6, 7, 8, 9]))
    assert cfg.elements == (1, 6, 7, 8, 9)
    assert NetConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError):
        NetConfig(time_dim=3)


def test_preset_sizes(layout, capsys):
    """Print parameter counts and a rough CPU forward time on an 18-atom molecule."""
    z = [6] * 7 + [8, 7] + [1] * 9
    counts = {}
    for name in ("tiny", "small", "medium"):
        cfg = NetConfig(**NET_PRESETS[name])
        model = QHFlowNet(cfg).eval()
        counts[name] = sum(p.numel() for p in model.parameters())
        msg = f"{name}: {counts[name]} parameters"
        if name != "medium":
            b = make_batch([z], layout, cfg.cutoff, cfg.pair_cutoff, seed=2, box=5.0)
            b = {k: (v.float() if v.is_floating_point() else v) for k, v in b.items()}
            with torch.no_grad():
                model(b)
                t0 = time.perf_counter()
                model(b)
            msg += f", forward {1e3 * (time.perf_counter() - t0):.0f} ms (18 atoms, CPU)"
        with capsys.disabled():
            print("\n" + msg)
    assert counts["tiny"] < counts["small"] < counts["medium"]
