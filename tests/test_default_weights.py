"""The shipped weights: load offline from the installed package and predict for ethanol."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pyscf import dft

import pyscf_qhflow
from pyscf_qhflow.checkpoint import DEFAULT_WEIGHTS, read_checkpoint, tensor_digest


def test_default_weights_are_shipped_with_a_model_card():
    assert DEFAULT_WEIGHTS.is_file(), f"{DEFAULT_WEIGHTS} is missing"
    ckpt = read_checkpoint(DEFAULT_WEIGHTS)
    card = ckpt["card"]
    assert card["xc"] == "b3lyp" and card["basis"] == "def2-svp"
    assert card["elements"] == [1, 6, 7, 8, 9]
    assert card["sha256"] == tensor_digest(ckpt["state_dict"])
    assert card["split"]["method"] == "split_by_qm9_index"
    # the card (the card file beside the weights, where the figures measured
    # after training go) must report the validation and test errors it was chosen on
    from pyscf_qhflow.checkpoint import read_card
    metrics = read_card(DEFAULT_WEIGHTS, card)["metrics"]
    for key in ("val_h_mae_uha", "test_h_mae_uha"):
        assert np.isfinite(metrics[key]) and 0 < metrics[key] < 1e4, key
    assert card["split"]["test"] == metrics["test_molecules"] > 0


def test_model_card_file_names_the_shipped_tensors():
    """The card beside the weights (read by load_model) describes exactly these tensors."""
    from pyscf_qhflow.checkpoint import card_path
    ckpt = read_checkpoint(DEFAULT_WEIGHTS)
    path = card_path(DEFAULT_WEIGHTS)
    if not path.is_file():
        pytest.skip("no card file beside the shipped weights: the stored card is the card")
    card = pyscf_qhflow.load_model("default").card
    assert card["sha256"] == ckpt["card"]["sha256"] == tensor_digest(ckpt["state_dict"])
    assert card["xc"] == "b3lyp" and np.isfinite(card["metrics"]["test_h_mae_uha"])


def test_load_default_and_predict_ethanol(ethanol):
    model = pyscf_qhflow.load_model("default")
    fock = pyscf_qhflow.Predictor(model).predict_fock(ethanol)
    assert fock.shape == (ethanol.nao, ethanol.nao) and fock.dtype == np.float64
    np.testing.assert_array_equal(fock, fock.T)
    # a trained model must beat nothing: its orbitals give a sane closed-shell density
    mf = dft.RKS(ethanol, xc="b3lyp")
    mf.grids.level = 1
    mf.qhflow_model = model
    dm = mf.get_init_guess(key="qhflow")
    assert mf.qhflow_info["used"] and mf.qhflow_info["model"] == model.name
    assert abs(np.einsum("ij,ji->", dm, mf.get_ovlp()) - ethanol.nelectron) < 1e-8


def test_default_is_what_the_hook_uses(water, monkeypatch):
    monkeypatch.setattr(pyscf_qhflow.config, "default_model", None)
    mf = dft.RKS(water, xc="b3lyp")
    mf.grids.level = 1
    mf.init_guess = "qhflow"
    mf.conv_tol = 1e-9
    mf.kernel()
    assert mf.converged and mf.qhflow_info["used"]
    assert mf.qhflow_info["model"] == pyscf_qhflow.load_model("default").name


@pytest.mark.parametrize("device", ["cuda"])
def test_gpu_prediction_matches_cpu(water, device):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine: GPU inference is checked only where one is")
    from pyscf_qhflow.hinit import minao_fock
    h = minao_fock(water)
    cpu = pyscf_qhflow.Predictor(pyscf_qhflow.load_model("default", device="cpu"))
    gpu = pyscf_qhflow.Predictor(pyscf_qhflow.load_model("default", device=device))
    np.testing.assert_allclose(gpu.predict_fock(water, hinit=h),
                               cpu.predict_fock(water, hinit=h), atol=1e-6)


WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"


def test_weights_dir_holds_the_default_and_at_most_one_candidate():
    """Older weights live in git history (CHANGELOG.md names their commits), not in the tree."""
    files = sorted(p.name for p in WEIGHTS_DIR.glob("*.pt"))
    assert "default.pt" in files and len(files) <= 2, files
    for name in files:  # each verifies against its own sha256 (no model is built)
        card = read_checkpoint(WEIGHTS_DIR / name)["card"]
        assert card["xc"] == "b3lyp" and card["basis"] == "def2-svp"
