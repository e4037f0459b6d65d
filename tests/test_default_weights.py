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
    assert "val_h_mae_uha" in str(card["metrics"]) or card["metrics"]


def test_load_default_and_predict_ethanol(ethanol):
    model = pyscf_qhflow.load_model("default")
    fock = model.predict_fock(ethanol)
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
    cpu = pyscf_qhflow.load_model("default", device="cpu").predict_fock(water)
    gpu = pyscf_qhflow.load_model("default", device=device).predict_fock(water)
    np.testing.assert_allclose(gpu, cpu, atol=1e-6)


WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"


@pytest.mark.parametrize("path", sorted(WEIGHTS_DIR.glob("*.pt")), ids=lambda p: p.name)
def test_every_committed_checkpoint_verifies_and_loads(path, water):
    # read_checkpoint checks the tensors against the card's sha256
    card = read_checkpoint(path)["card"]
    assert card["xc"] == "b3lyp" and card["basis"] == "def2-svp"
    model = pyscf_qhflow.load_model(path)
    fock = model.predict_fock(water)
    assert fock.shape == (water.nao, water.nao) and np.isfinite(fock).all()
