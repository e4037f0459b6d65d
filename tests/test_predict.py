"""The Predictor and its pipeline, and the model config (untrained tiny preset)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from pyscf import gto, scf

from pyscf_qhflow import hinit as hinit_builder
from pyscf_qhflow.aolayout import MolLayout
from pyscf_qhflow.errors import UnsupportedMoleculeError
from pyscf_qhflow.guess.hook import predict_fock
from pyscf_qhflow.guess.predictor import Prediction, Predictor
from pyscf_qhflow.model import ModelConfig, QHFlowModel

from conftest import example_mol


@pytest.fixture(scope="module")
def model64():
    return QHFlowModel.from_config("tiny", seed=1).to(torch.float64).eval()


@pytest.fixture(scope="module")
def hinit_of():
    """H_init per molecule geometry, so repeated predictions do not redo the DFT build."""
    cache = {}

    def get(mol):
        key = mol.atom_coords().tobytes()
        if key not in cache:
            cache[key] = hinit_builder.minao_fock(mol, xc="b3lyp")
        return cache[key]

    return get


def random_rotation(seed, reflect=False):
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    q = q * np.sign(np.linalg.det(q))
    return -q if reflect else q  # -q: an improper rotation (det -1)


def rotated(mol, rot):
    coords = mol.atom_coords(unit="Angstrom") @ rot.T
    return gto.M(atom=[(mol.atom_symbol(i), c) for i, c in enumerate(coords)],
                 basis=mol.basis, unit="Angstrom", verbose=0)


def test_prediction_is_symmetric_float64_and_right_shape(model64, water, hinit_of):
    h = hinit_of(water)
    pred = Predictor(model64).predict(water, hinit=h)
    assert isinstance(pred, Prediction)
    f = pred.fock
    assert f.dtype == np.float64 and f.shape == (water.nao, water.nao)
    np.testing.assert_array_equal(f, f.T)
    np.testing.assert_array_equal(pred.hinit, h)
    assert 0 < np.abs(f - h).max() < 10  # the untrained residual is small but not zero
    assert set(pred.timings) == {"layout", "hinit", "batch", "network", "assemble"}
    assert not pred.guard["raised"]


def test_float32_model_returns_float64(water, hinit_of):
    m = QHFlowModel.from_config("tiny", seed=1)
    assert m.dtype == torch.float32
    f = Predictor(m).predict_fock(water, hinit=hinit_of(water))
    assert f.dtype == np.float64
    np.testing.assert_array_equal(f, f.T)


def test_raw_residual_is_what_the_damping_acts_on(model64, water, hinit_of):
    """Prediction.residual is the network's residual before post-processing: with tau = 0
    and the guard off, F = H_init + residual exactly."""
    h = hinit_of(water)
    plain = Predictor(model64, overlap_damping=0.0, min_gap_ratio=0.0).predict(water, hinit=h)
    np.testing.assert_allclose(plain.fock, h + 0.5 * (plain.residual + plain.residual.T),
                               rtol=0, atol=1e-12)
    damped = Predictor(model64, overlap_damping=0.1, min_gap_ratio=0.0).predict(water, hinit=h)
    np.testing.assert_allclose(damped.residual, plain.residual, rtol=0, atol=1e-12)
    assert np.abs(damped.fock - plain.fock).max() > 1e-8


@pytest.mark.parametrize("num_steps, reflect, tau",
                         [(0, False, 0.0), (3, False, 0.0), (0, True, 0.0), (2, True, 1e-2)])
def test_prediction_is_equivariant(model64, num_steps, reflect, tau):
    """F(R x) = D F(x) D^T when the rotated molecule gets D H_init D^T as input
    (also with the residual's overlap damping, which depends on S)."""
    predictor = Predictor(model64, num_steps=num_steps, overlap_damping=tau)
    mol = example_mol("ethanol")
    rot = random_rotation(7, reflect)
    assert np.linalg.det(rot) == pytest.approx(-1.0 if reflect else 1.0)
    mol_r = rotated(mol, rot)
    assert np.abs(mol_r.atom_coords() - mol.atom_coords()).max() > 0.5
    layout = MolLayout.from_mol(mol, model64.basis_layout)
    d = layout.to_pyscf(layout.wigner_D(rot))  # PySCF order
    h = hinit_builder.minao_fock(mol, xc=model64.xc)
    # grid-free input: the rotated molecule gets the exactly rotated H_init
    f = predictor.predict_fock(mol, hinit=h)
    f_r = predictor.predict_fock(mol_r, hinit=d @ h @ d.T)
    np.testing.assert_allclose(f_r, d @ f @ d.T, rtol=0, atol=1e-6)
    residual = f - h
    assert np.abs(residual).max() > 1e-4  # the check is not only on H_init


def test_batch_equals_single(model64, water, methane, hinit_of):
    predictor = Predictor(model64)
    hs = [hinit_of(m) for m in (water, methane)]
    singles = [predictor.predict_fock(m, hinit=h) for m, h in zip((water, methane), hs)]
    batched = predictor.predict_batch([water, methane], hinits=hs)
    for a, b in zip(singles, batched):
        np.testing.assert_allclose(a, b.fock, rtol=0, atol=1e-10)


def test_supports_and_refusals(model64, water):
    predictor = Predictor(model64)
    assert predictor.supports(water) == (True, "")
    checks = {
        "cart": gto.M(atom="O 0 0 0; H 0 0 1", basis="def2-svp", cart=True, spin=1, verbose=0),
        "element S": gto.M(atom="S 0 0 0; H 0 0 1.3", basis="def2-svp", spin=1, verbose=0),
        "ghost": gto.M(atom="O 0 0 0; H 0 0 1; ghost-H 0 1 0", basis="def2-svp", spin=1,
                       verbose=0),
        "basis": gto.M(atom="O 0 0 0; H 0 0.76 0.59; H 0 -0.76 0.59", basis="6-31g**",
                       verbose=0),
    }
    for what, mol in checks.items():
        ok, reason = predictor.supports(mol)
        assert not ok and reason.startswith("model tiny"), what
        with pytest.raises(UnsupportedMoleculeError):
            predictor.predict(mol)
        with pytest.raises(UnsupportedMoleculeError):
            predict_fock(mol, model64)
    ion = gto.M(atom="O 0 0 0; H 0 0 1", basis="def2-svp", charge=-1, verbose=0)
    ok, note = predictor.supports(ion)
    assert ok and "charge -1" in note


def test_bad_geometry_is_refused(model64):
    mol = gto.M(atom="O 0 0 0; H 0 0 0.01; H 0 1 0", basis="def2-svp", verbose=0)
    with pytest.raises(ValueError, match="apart"):
        Predictor(model64).predict(mol)


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


def test_predictor_options_default_to_the_stored_ones_and_are_checked(water, hinit_of):
    model = QHFlowModel.from_config("tiny", seed=0)
    default = Predictor(model)
    assert (default.num_steps, default.overlap_damping, default.min_gap_ratio) == (
        model.config.flow.num_steps, model.config.overlap_damping, model.config.min_gap_ratio)
    h = hinit_of(water)
    k0 = Predictor(model, num_steps=0).predict_fock(water, hinit=h)
    k2 = Predictor(model, num_steps=2).predict_fock(water, hinit=h)
    assert np.abs(k2 - k0).max() > 1e-8  # K changes the sample
    np.testing.assert_allclose(Predictor(model, num_steps=2).predict_fock(water, hinit=h), k2,
                               atol=1e-8)
    assert model.config.flow.num_steps == ModelConfig.preset("tiny").flow.num_steps  # unchanged
    for bad, match in (({"num_steps": -1}, "num_steps"), ({"overlap_damping": -1}, "overlap"),
                       ({"min_gap_ratio": 1.0}, "min_gap_ratio")):
        with pytest.raises(ValueError, match=match):
            Predictor(model, **bad)


def test_removed_residual_range_is_accepted_only_as_null():
    d = ModelConfig.preset("tiny").to_dict()
    assert "residual_range" not in d
    assert ModelConfig.from_dict({**d, "residual_range": None}) == ModelConfig.preset("tiny")
    with pytest.raises(ValueError, match="removed"):
        ModelConfig.from_dict({**d, "residual_range": [1.0, 2.0]})


def test_compiled_network_predicts_the_same(water, hinit_of):
    """compile_net() goes through torch.compile (TorchDynamo; the 'eager' backend keeps
    the test fast, the inductor default is measured in benchmarks/bench_compile.py) and
    leaves predictions and the state_dict unchanged."""
    model = QHFlowModel.from_config("tiny", seed=1).to(torch.float64).eval()
    keys_before = list(model.state_dict())
    predictor = Predictor(model, num_steps=0)
    plain = predictor.predict_fock(water, hinit=hinit_of(water))
    torch._dynamo.reset()
    calls = {"n": 0}

    def counting_backend(gm, example_inputs):
        calls["n"] += 1
        return gm.forward

    assert model.compile_net(backend=counting_backend).is_compiled
    np.testing.assert_allclose(predictor.predict_fock(water, hinit=hinit_of(water)), plain,
                               rtol=0, atol=1e-10)
    assert calls["n"] > 0, "torch.compile never saw a graph"
    assert list(model.state_dict()) == keys_before
