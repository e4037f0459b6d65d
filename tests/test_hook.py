"""The init_guess='qhflow' hook, with stand-in predictors (no trained model needed)."""
from __future__ import annotations

import numpy as np
import pytest
from pyscf import dft, gto, scf

import pyscf_qhflow
from pyscf_qhflow import config
from pyscf_qhflow import hinit as hinit_module
from pyscf_qhflow.errors import UnsupportedMoleculeError

from conftest import example_mol


class ConvergedFock:
    """Stand-in predictor: returns a fixed Fock matrix (here the converged one)."""

    name = "stand-in-converged"

    def __init__(self, fock):
        self.fock = fock
        self.calls = 0

    def predict_fock(self, mol):
        self.calls += 1
        return self.fock


class CoreHamiltonian:
    """Stand-in whose density differs from minao's: the core Hamiltonian."""

    name = "stand-in-hcore"

    def predict_fock(self, mol):
        return mol.intor("int1e_kin") + mol.intor("int1e_nuc")


class MinaoFock:
    """Stand-in: the HF Fock matrix of the minao density (a sensible, non-minao guess)."""

    name = "stand-in-minao-fock"

    def predict_fock(self, mol):
        mf = scf.RHF(mol)
        return mf.get_fock(dm=mf.init_guess_by_minao())


class Refuses:
    name = "stand-in-refuses"

    def supports(self, mol):
        return False, "element S is not in the model"

    def predict_fock(self, mol):  # pragma: no cover - must never be reached
        raise AssertionError("predict_fock called on an unsupported molecule")


@pytest.fixture(scope="module")
def ethanol_reference():
    mol = example_mol("ethanol")
    mf = dft.RKS(mol, xc="b3lyp")
    mf.grids.level = 1  # the hook does not depend on grid quality; keep it fast
    mf.conv_tol = 1e-10
    e_minao = mf.kernel()
    assert mf.converged
    return mol, e_minao, mf.cycles, mf.get_fock()


def _ks(cls, mol, predictor):
    mf = cls(mol, xc="b3lyp")
    mf.grids.level = 1
    mf.conv_tol = 1e-10
    mf.init_guess = "qhflow"
    mf.qhflow_model = predictor
    return mf


@pytest.mark.parametrize("cls", [dft.RKS, dft.UKS])
def test_converged_fock_converges_at_once(ethanol_reference, cls):
    mol, e_minao, cycles_minao, fock = ethanol_reference
    predictor = ConvergedFock(fock)
    mf = _ks(cls, mol, predictor)
    e = mf.kernel()
    assert mf.converged and predictor.calls == 1
    assert mf.qhflow_info["used"] and mf.qhflow_info["model"] == "stand-in-converged"
    assert mf.cycles <= 3 < cycles_minao
    assert abs(e - e_minao) < 1e-8


def test_density_comes_from_the_predictor(water):
    mf = scf.RHF(water)
    mf.qhflow_model = CoreHamiltonian()
    dm = mf.get_init_guess(key="qhflow")
    np.testing.assert_allclose(dm, mf.init_guess_by_1e(), atol=1e-10)
    assert np.abs(dm - mf.init_guess_by_minao()).max() > 1e-2
    assert dm.mo_coeff.shape == (water.nao, water.nao)  # PySCF's tags are kept
    assert mf.qhflow_info["used"]


@pytest.mark.parametrize("variant", ["rohf", "uhf", "df", "newton"])
def test_variants_take_the_qhflow_key(water, variant):
    mol = water.copy()
    if variant == "rohf":
        mol.charge, mol.spin = 1, 1
        mol.build()
        mf = scf.ROHF(mol)
    elif variant == "uhf":
        mol.charge, mol.spin = 1, 1
        mol.build()
        mf = scf.UHF(mol)
    elif variant == "df":
        mf = scf.RHF(mol).density_fit()
    else:
        mf = scf.RHF(mol).newton()
    mf.qhflow_model = MinaoFock()
    mf.init_guess = "qhflow"
    mf.conv_tol = 1e-9
    e = mf.kernel()
    assert mf.converged and mf.qhflow_info["used"]
    dm = mf.get_init_guess(key="qhflow")
    nelec = np.einsum("...ij,ji->...", np.asarray(dm), mf.get_ovlp()).sum()
    assert abs(nelec - mol.nelectron) < 1e-8
    if variant in ("rohf", "uhf"):
        assert np.asarray(dm).shape == (2, mol.nao, mol.nao)
    ref = mf.copy()
    ref.init_guess = "minao"
    ref.mo_coeff = None
    assert abs(ref.kernel() - e) < 1e-7


def test_other_keys_are_untouched(water):
    mf = scf.RHF(water)
    mf.qhflow_model = Refuses()
    np.testing.assert_allclose(mf.get_init_guess(key="atom"), mf.init_guess_by_atom(), atol=1e-8)
    np.testing.assert_allclose(mf.get_init_guess(key="minao"), mf.init_guess_by_minao(), atol=1e-12)
    assert mf.qhflow_info is None


def test_unsupported_warns_then_raises(water, monkeypatch):
    mf = scf.RHF(water)
    mf.qhflow_model = Refuses()
    with pytest.warns(pyscf_qhflow.QHFlowGuessWarning, match="element S is not in the model"):
        dm = mf.get_init_guess(key="qhflow")
    np.testing.assert_allclose(dm, mf.init_guess_by_minao())
    assert mf.qhflow_info == {"used": False,
                              "fallback_reason": "model stand-in-refuses: element S is "
                                                 "not in the model"}
    monkeypatch.setattr(config, "on_unsupported", "raise")
    with pytest.raises(UnsupportedMoleculeError, match="element S"):
        mf.get_init_guess(key="qhflow")
    monkeypatch.setattr(config, "on_unsupported", "sometimes")
    with pytest.raises(ValueError, match="on_unsupported must be one of"):
        mf.get_init_guess(key="qhflow")


def test_default_model_and_public_predict_fock(water, monkeypatch):
    monkeypatch.setattr(config, "default_model", None)
    pyscf_qhflow.set_default_model(CoreHamiltonian())
    mf = scf.RHF(water)
    mf.init_guess = "qhflow"
    mf.kernel()
    assert mf.qhflow_info["model"] == "stand-in-hcore"
    f = pyscf_qhflow.predict_fock(water)
    np.testing.assert_allclose(f, water.intor("int1e_kin") + water.intor("int1e_nuc"))
    with pytest.raises(UnsupportedMoleculeError):
        pyscf_qhflow.predict_fock(water, model=Refuses())
    with pytest.raises(TypeError, match="not a predictor"):
        pyscf_qhflow.predict_fock(water, model=object())


def test_bad_prediction_is_refused(water):
    class Broken:
        def predict_fock(self, mol):
            return np.full((mol.nao, mol.nao), np.nan)

    mf = scf.RHF(water)
    mf.qhflow_model = Broken()
    with pytest.raises(ValueError, match="NaN"):
        mf.get_init_guess(key="qhflow")


class Def2svpMinaoFock(MinaoFock):
    """Stand-in that, like the real model, only works in def2-SVP."""

    basis = "def2-svp"
    name = "stand-in-def2svp"

    def supports(self, mol):
        return (mol.basis == "def2-svp", f"basis {mol.basis} is not def2-svp")


@pytest.mark.parametrize("cls", [scf.RHF, scf.UHF, scf.ROHF])
def test_other_basis_gets_a_projected_density(water, cls):
    mol = water.copy()
    mol.basis = "cc-pvdz"
    if cls is not scf.RHF:
        mol.charge, mol.spin = 1, 1
    mol.build()
    mf = cls(mol)
    mf.qhflow_model = Def2svpMinaoFock()
    mf.init_guess = "qhflow"
    mf.conv_tol = 1e-10
    dm = mf.get_init_guess(key="qhflow")
    assert mf.qhflow_info["projected_from"] == "def2-svp"
    nelec = np.einsum("...ij,ji->...", np.asarray(dm), mf.get_ovlp())
    if cls is scf.RHF:
        assert abs(nelec - mol.nelectron) < 1e-10
    else:
        np.testing.assert_allclose(nelec, mol.nelec, atol=1e-10)
    e = mf.kernel()
    ref = cls(mol)
    ref.conv_tol = 1e-10
    assert mf.converged and abs(ref.kernel() - e) < 1e-8


def _bad_mol(coords):
    mol = gto.Mole(atom=[("O", coords[0]), ("H", coords[1]), ("H", coords[2])],
                   basis="def2-svp", verbose=0)
    return mol.build()


@pytest.mark.parametrize("coords,message", [
    ([(0, 0, 0), (0, 0.76, -0.47), (0, -0.76, np.nan)], "NaN or infinite"),
    ([(0, 0, 0), (0, 0.76, -0.47), (0, -0.76, np.inf)], "NaN or infinite"),
    ([(0, 0, 0), (0, 0.76, -0.47), (0, 0.76, -0.42)], "closer than 0.1 Angstrom"),
])
def test_bad_geometry_is_a_value_error(coords, message):
    try:
        mol = _bad_mol(coords)
    except Exception as err:  # PySCF itself may refuse first; that is fine too
        pytest.skip(f"PySCF refuses this geometry itself: {err}")
    mf = scf.RHF(mol)
    mf.qhflow_model = CoreHamiltonian()
    with pytest.raises(ValueError, match=message):
        mf.get_init_guess(key="qhflow")
    with pytest.raises(ValueError, match=message):
        pyscf_qhflow.predict_fock(mol, model=CoreHamiltonian())


def test_empty_molecule_is_a_value_error():
    mol = gto.Mole(atom=[], basis="def2-svp", verbose=0)
    mol.build()
    with pytest.raises(ValueError, match="empty molecule"):
        pyscf_qhflow.predict_fock(mol, model=CoreHamiltonian())


@pytest.fixture
def protocol_grid(monkeypatch):
    """H_init on the protocol's level-3 grid, shared with the SCF (not the default level 1)."""
    from pyscf_qhflow import config
    monkeypatch.setattr(config, "hinit_grid_level", None)


class RecordsHinit:
    """Stand-in that takes H_init from the caller and predicts F = H_init."""

    name = "stand-in-hinit"
    xc = "b3lyp"

    def __init__(self):
        self.hinits = []

    def predict_fock(self, mol, hinit=None):
        self.hinits.append(hinit)
        return hinit_module.minao_fock(mol, xc=self.xc) if hinit is None else hinit


@pytest.mark.parametrize("make, shared", [
    (lambda mol: dft.RKS(mol, xc="b3lyp"), ["grids", "integrals"]),  # the protocol itself
    (lambda mol: dft.RKS(mol, xc="pbe0"), ["grids", "integrals"]),  # same grid, other xc
    (lambda mol: scf.RHF(mol), ["integrals"]),  # no grid to share
    (lambda mol: dft.UKS(mol, xc="b3lyp"), ["integrals"]),  # open-shell grids prune otherwise
    (lambda mol: dft.RKS(mol, xc="b3lyp").density_fit(), []),  # DF: not the exact integrals
])
def test_hinit_shares_integrals_and_grids_with_the_scf(water, make, shared, protocol_grid):
    """H_init is the protocol's MinAO Fock, built once with what the SCF needs anyway."""
    mf = make(water)
    predictor = RecordsHinit()
    mf.qhflow_model = predictor
    mf.get_init_guess(key="qhflow")
    assert mf.qhflow_info["used"] and mf.qhflow_info["hinit_shared_with_scf"] == shared
    (given,) = predictor.hinits
    if not shared:
        assert given is None  # the model builds its own H_init
        return
    np.testing.assert_allclose(given, hinit_module.minao_fock(water), atol=1e-10)
    assert mf._eri is not None  # kept: the SCF does not compute the integrals again
    if "grids" in shared:
        assert mf.grids.coords is not None


def test_hinit_shared_grids_leave_the_scf_unchanged(water, protocol_grid):
    """An SCF whose grids and integrals H_init built converges as it does on its own."""
    plain = dft.RKS(water, xc="pbe0")
    plain.conv_tol = 1e-10
    e_plain = plain.kernel()
    mf = dft.RKS(water, xc="pbe0")
    mf.conv_tol = 1e-10
    mf.init_guess = "qhflow"
    mf.qhflow_model = RecordsHinit()
    assert abs(mf.kernel() - e_plain) < 1e-9
    assert mf.qhflow_info["hinit_shared_with_scf"] == ["grids", "integrals"]


def test_model_guess_with_shared_hinit_equals_its_own(water, protocol_grid):
    """QHFlowModel takes H_init from the SCF object and predicts what it predicts alone."""
    from pyscf_qhflow.guess.predictor import Predictor
    from pyscf_qhflow.model import QHFlowModel
    model = QHFlowModel.from_config("tiny", seed=0)
    mf = dft.RKS(water, xc="b3lyp")  # grid level 3, the protocol
    mf.qhflow_model = model
    dm = mf.get_init_guess(key="qhflow")
    assert mf.qhflow_info["hinit_shared_with_scf"] == ["grids", "integrals"]
    f = Predictor(model).predict_fock(water)  # H_init built by the predictor itself
    e, c = mf.eig(f, mf.get_ovlp())
    np.testing.assert_allclose(dm, mf.make_rdm1(c, mf.get_occ(e, c)), atol=1e-8)


def test_one_guess_checks_input_support_and_layout_once(water, monkeypatch):
    """The hook prepares the molecule once and hands the layout to the predictor."""
    from pyscf_qhflow.aolayout import MolLayout
    from pyscf_qhflow.guess import hook, predictor
    from pyscf_qhflow.guess.predictor import Predictor
    from pyscf_qhflow.model import QHFlowModel

    calls = {"check_input": 0, "from_mol": 0, "prepare": 0}
    real_check, real_from_mol = hook.check_input, MolLayout.from_mol.__func__
    real_prepare = Predictor.prepare

    def counting_check(mol):
        calls["check_input"] += 1
        return real_check(mol)

    def counting_from_mol(cls, mol, basis_layout=None):
        calls["from_mol"] += 1
        return real_from_mol(cls, mol, basis_layout)

    def counting_prepare(self, mol):
        calls["prepare"] += 1
        return real_prepare(self, mol)

    monkeypatch.setattr(hook, "check_input", counting_check)
    monkeypatch.setattr(predictor, "check_input", counting_check)
    monkeypatch.setattr(MolLayout, "from_mol", classmethod(counting_from_mol))
    monkeypatch.setattr(Predictor, "prepare", counting_prepare)
    mf = dft.RKS(water, xc="b3lyp")
    mf.grids.level = 1
    mf.qhflow_model = QHFlowModel.from_config("tiny", seed=0)
    mf.get_init_guess(key="qhflow")
    assert mf.qhflow_info["used"]
    assert calls == {"check_input": 1, "from_mol": 1, "prepare": 1}


def test_coarse_hinit_grid_is_for_the_network_input_only(water, monkeypatch):
    """config.hinit_grid_level = 1 (the default): H_init on its own level-1 grid, the
    SCF keeps level 3."""
    from pyscf_qhflow import config
    assert config.hinit_grid_level == 1
    plain = dft.RKS(water, xc="b3lyp")
    plain.conv_tol = 1e-10
    e_plain = plain.kernel()
    mf = dft.RKS(water, xc="b3lyp")
    mf.conv_tol = 1e-10
    mf.init_guess = "qhflow"
    predictor = mf.qhflow_model = RecordsHinit()
    assert abs(mf.kernel() - e_plain) < 1e-9
    assert mf.qhflow_info["hinit_shared_with_scf"] == ["integrals"]  # not the grid
    assert mf.grids.level == 3
    (given,) = predictor.hinits
    exact = hinit_module.minao_fock(water)
    coarse = hinit_module.minao_fock(water, grid_level=1)
    np.testing.assert_allclose(given, coarse, atol=1e-10)
    assert 0 < np.abs(given - exact).max() < 1e-3  # Hartree: close, not the same
    monkeypatch.setattr(config, "hinit_grid_level", 12)
    with pytest.raises(ValueError, match="hinit_grid_level"):
        config.check()


def test_hinit_hands_its_integrals_to_the_scf_even_when_they_fill_the_memory(water, monkeypatch):
    """PySCF's in-core check counts the process's memory: once H_init's integrals exist,
    the SCF's own check would refuse them (aspirin ran direct SCF, twice as slow per
    cycle).  The decision is taken before they are built."""
    from pyscf import gto
    built = {"int2e": False}
    intor = gto.Mole.intor

    def recording_intor(self, name, *args, **kwargs):
        built["int2e"] |= name.startswith("int2e")
        return intor(self, name, *args, **kwargs)

    monkeypatch.setattr(gto.Mole, "intor", recording_intor)
    # memory is enough for one copy of the integrals, not beside one that exists
    monkeypatch.setattr(scf.hf.SCF, "_is_mem_enough", lambda self: not built["int2e"])
    mf = dft.RKS(water, xc="b3lyp")
    mf.qhflow_model = RecordsHinit()
    mf.get_init_guess(key="qhflow")
    assert built["int2e"] and mf._eri is not None
    assert "integrals" in mf.qhflow_info["hinit_shared_with_scf"]
