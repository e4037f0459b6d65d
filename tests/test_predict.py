"""The model wrapper and the prediction pipeline (untrained tiny preset)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from pyscf import gto, scf

from pyscf_qhflow import predict
from pyscf_qhflow.aolayout import MolLayout, UnsupportedMoleculeError
from pyscf_qhflow.model import ModelConfig, QHFlowModel

from conftest import example_mol


@pytest.fixture(scope="module")
def model64():
    return QHFlowModel.from_config("tiny", seed=1).to(torch.float64).eval()


@pytest.fixture(scope="module")
def hinit_cache():
    """H_init per molecule geometry, so repeated predictions do not redo the DFT build."""
    return {}


@pytest.fixture
def cached_hinit(monkeypatch, hinit_cache):
    original = predict.hinit_and_overlap

    def cached(mol, xc):
        key = (mol.atom_coords().tobytes(), xc)
        if key not in hinit_cache:
            hinit_cache[key] = original(mol, xc)
        return hinit_cache[key]

    monkeypatch.setattr(predict, "hinit_and_overlap", cached)
    return cached


def random_rotation(seed, reflect=False):
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    q = q * np.sign(np.linalg.det(q))
    return -q if reflect else q  # -q: an improper rotation (det -1)


def rotated(mol, rot):
    coords = mol.atom_coords(unit="Angstrom") @ rot.T
    return gto.M(atom=[(mol.atom_symbol(i), c) for i, c in enumerate(coords)],
                 basis=mol.basis, unit="Angstrom", verbose=0)


def test_prediction_is_symmetric_float64_and_right_shape(model64, water, cached_hinit):
    f = model64.predict_fock(water)
    assert f.dtype == np.float64 and f.shape == (water.nao, water.nao)
    np.testing.assert_array_equal(f, f.T)
    h, _ = cached_hinit(water, "b3lyp")
    assert 0 < np.abs(f - h).max() < 10  # the untrained residual is small but not zero
    assert set(model64.last_timings) == {"layout", "hinit", "batch", "network", "assemble"}


def test_float32_model_returns_float64(water, cached_hinit):
    m = QHFlowModel.from_config("tiny", seed=1)
    assert m.dtype == torch.float32
    f = m.predict_fock(water)
    assert f.dtype == np.float64
    np.testing.assert_array_equal(f, f.T)


@pytest.mark.parametrize("num_steps, reflect, tau, residual_range",
                         [(0, False, 0.0, None), (3, False, 0.0, None), (0, True, 0.0, None),
                          (2, True, 1e-2, (1.5, 2.5))])
def test_prediction_is_equivariant(model64, monkeypatch, num_steps, reflect, tau,
                                   residual_range):
    """F(R x) = D F(x) D^T when the rotated molecule gets D H_init D^T as input
    (also with the residual's overlap damping, which depends on S, and its
    distance switch, which depends on interatomic distances)."""
    monkeypatch.setattr(model64, "config", model64.config)  # restored after the test
    model64.set_overlap_damping(tau)
    model64.set_residual_range(residual_range)
    mol = example_mol("ethanol")
    rot = random_rotation(7, reflect)
    assert np.linalg.det(rot) == pytest.approx(-1.0 if reflect else 1.0)
    mol_r = rotated(mol, rot)
    assert np.abs(mol_r.atom_coords() - mol.atom_coords()).max() > 0.5
    layout = MolLayout.from_mol(mol, model64.basis_layout)
    d = layout.to_pyscf(layout.wigner_D(rot))  # PySCF order
    h, s = predict.hinit_and_overlap(mol, model64.xc)
    inputs = {mol.atom_coords().tobytes(): (h, s),
              mol_r.atom_coords().tobytes(): (d @ h @ d.T, d @ s @ d.T)}
    monkeypatch.setattr(predict, "hinit_and_overlap",
                        lambda m, xc: inputs[m.atom_coords().tobytes()])
    f = model64.predict_fock(mol, num_steps=num_steps)
    f_r = model64.predict_fock(mol_r, num_steps=num_steps)
    np.testing.assert_allclose(f_r, d @ f @ d.T, rtol=0, atol=1e-6)
    residual = f - h
    assert np.abs(residual).max() > 1e-4  # the check is not only on H_init


def test_batch_equals_single(model64, water, methane, cached_hinit):
    singles = [model64.predict_fock(m) for m in (water, methane)]
    batched = model64.predict_fock_batch([water, methane])
    for a, b in zip(singles, batched):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-10)


def test_supports_and_refusals(model64, water):
    assert model64.supports(water) == (True, "")
    checks = {
        "cart": gto.M(atom="O 0 0 0; H 0 0 1", basis="def2-svp", cart=True, spin=1, verbose=0),
        "element S": gto.M(atom="S 0 0 0; H 0 0 1.3", basis="def2-svp", spin=1, verbose=0),
        "ghost": gto.M(atom="O 0 0 0; H 0 0 1; ghost-H 0 1 0", basis="def2-svp", spin=1,
                       verbose=0),
        "basis": gto.M(atom="O 0 0 0; H 0 0.76 0.59; H 0 -0.76 0.59", basis="6-31g**",
                       verbose=0),
    }
    for what, mol in checks.items():
        ok, reason = model64.supports(mol)
        assert not ok and reason, what
        with pytest.raises(UnsupportedMoleculeError):
            predict.predict_fock(mol, model64)
    ion = gto.M(atom="O 0 0 0; H 0 0 1", basis="def2-svp", charge=-1, verbose=0)
    ok, note = model64.supports(ion)
    assert ok and "charge -1" in note


def test_bad_geometry_is_refused(model64):
    mol = gto.M(atom="O 0 0 0; H 0 0 0.01; H 0 1 0", basis="def2-svp", verbose=0)
    with pytest.raises(ValueError, match="apart"):
        predict.predict_fock(mol, model64)


def test_config_rejects_unknown_keys_and_presets():
    d = ModelConfig.preset("tiny").to_dict()
    assert ModelConfig.from_dict(d) == ModelConfig.preset("tiny")
    for where, bad in (("model config", {**d, "lr": 1}),
                       ("protocol", {**d, "protocol": {**d["protocol"], "functional": "x"}}),
                       ("flow", {**d, "flow": {**d["flow"], "prior": 1}})):
        with pytest.raises(ValueError, match="unknown"):
            ModelConfig.from_dict(bad)
    with pytest.raises(ValueError, match="unknown"):
        QHFlowModel.from_config({**d, "net": {**d["net"], "chanels": 4}})
    with pytest.raises(ValueError, match="presets"):
        ModelConfig.preset("huge")
    for name in ("tiny", "small", "medium"):
        cfg = ModelConfig.preset(name)
        assert cfg.name == name and cfg.protocol.xc == "b3lyp"


def test_from_config_seed_is_reproducible_and_leaves_global_rng():
    state = torch.get_rng_state()
    a = QHFlowModel.from_config("tiny", seed=5)
    b = QHFlowModel.from_config("tiny", seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    for x, y in zip(a.parameters(), b.parameters()):
        assert torch.equal(x, y)


def test_guess_hook_runs_with_the_model(model64):
    mol = gto.M(atom="O 0 0 0; H 0 0.76 0.59; H 0 -0.76 0.59", basis="def2-svp", verbose=0)
    mf = scf.RHF(mol)
    mf.qhflow_model = model64
    mf.init_guess = "qhflow"
    e = mf.kernel()
    assert mf.converged and mf.qhflow_info["used"]
    assert e == pytest.approx(scf.RHF(mol).kernel(), abs=1e-7)


def test_set_num_steps_changes_the_default_k(water):
    model = QHFlowModel.from_config("tiny", seed=0)
    model.set_num_steps(2)
    k2 = model.predict_fock(water)
    assert model.flow.num_steps == 2
    model.set_num_steps(0)
    assert model.flow.num_steps == 0 and model.config.flow.num_steps == 0
    np.testing.assert_allclose(model.predict_fock(water), model.predict_fock(water, num_steps=0),
                               atol=1e-8)
    np.testing.assert_allclose(model.predict_fock(water, num_steps=2), k2, atol=1e-8)
    with pytest.raises(ValueError, match="num_steps must be >= 0"):
        model.set_num_steps(-1)


def test_compiled_network_predicts_the_same(water, cached_hinit):
    """compile_net() goes through torch.compile (TorchDynamo; the 'eager' backend keeps
    the test fast, the inductor default is measured in benchmarks/bench_compile.py) and
    leaves predictions and the state_dict unchanged."""
    model = QHFlowModel.from_config("tiny", seed=1).to(torch.float64).eval()
    keys_before = list(model.state_dict())
    plain = model.predict_fock(water, num_steps=0)
    torch._dynamo.reset()
    calls = {"n": 0}

    def counting_backend(gm, example_inputs):
        calls["n"] += 1
        return gm.forward

    assert model.compile_net(backend=counting_backend).is_compiled
    np.testing.assert_allclose(model.predict_fock(water, num_steps=0), plain, rtol=0, atol=1e-10)
    assert calls["n"] > 0, "torch.compile never saw a graph"
    assert list(model.state_dict()) == keys_before
