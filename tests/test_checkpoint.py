"""Checkpoints: save -> load gives identical predictions; damaged files are refused."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import pyscf_qhflow
from pyscf_qhflow import checkpoint
from pyscf_qhflow.checkpoint import (CheckpointError, load_model, load_training_state,
                                     read_checkpoint, save_checkpoint, save_training_state,
                                     update_checkpoint)
from pyscf_qhflow.model import QHFlowModel


@pytest.fixture(scope="module")
def model():
    m = QHFlowModel.from_config("tiny", seed=3)
    with torch.no_grad():  # make the weights non-trivial everywhere
        for p in m.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return m.eval()


@pytest.fixture(scope="module")
def saved(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    card = save_checkpoint(path, model, {"data": "unit test", "steps": 7,
                                         "metrics": {"val_h_mae_uha": 123.0}})
    return path, card


def test_save_load_gives_identical_predictions(model, saved, water):
    from pyscf_qhflow.guess.predictor import Predictor
    from pyscf_qhflow.hinit import minao_fock
    h = minao_fock(water, "b3lyp")  # once: PySCF's threaded sums vary ~1e-15
    path, card = saved
    loaded = load_model(path, device="cpu")
    assert loaded.config == model.config and loaded.name == "tiny"
    assert loaded.card["sha256"] == card["sha256"] and loaded.card["steps"] == 7
    assert loaded.card["xc"] == "b3lyp" and loaded.card["basis"] == "def2-svp"
    assert loaded.card["elements"] == [1, 6, 7, 8, 9] and "pyscf_qhflow" in \
        loaded.card["code_version"]
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    f1 = Predictor(model).predict_fock(water, hinit=h)
    f2 = Predictor(loaded).predict_fock(water, hinit=h)
    np.testing.assert_array_equal(f1, f2)


def test_update_checkpoint_changes_options_not_weights(saved, tmp_path):
    import shutil
    path = tmp_path / "copy.pt"
    shutil.copy(saved[0], path)
    before = read_checkpoint(path)
    card = update_checkpoint(path, config={"overlap_damping": 0.01},
                             card={"overlap_damping": "chosen in a unit test"})
    after = read_checkpoint(path)  # verifies the sha256 of the tensors again
    assert card["sha256"] == before["card"]["sha256"] == after["card"]["sha256"]
    assert after["config"]["overlap_damping"] == 0.01
    assert after["card"]["overlap_damping"] == "chosen in a unit test"
    assert after["card"]["steps"] == 7  # the rest of the card is kept
    for name, t in before["state_dict"].items():
        assert torch.equal(t, after["state_dict"][name])
    assert load_model(path, device="cpu").config.overlap_damping == 0.01
    with pytest.raises(CheckpointError, match="overlap_damping must be >= 0"):
        update_checkpoint(path, config={"overlap_damping": -1})
    assert read_checkpoint(path)["config"]["overlap_damping"] == 0.01  # untouched


def test_checkpoint_is_loadable_with_weights_only(saved):
    obj = torch.load(saved[0], weights_only=True)
    assert set(obj) >= {"config", "state_dict", "card", "format"}


def _damaged(path, tmp_path, name, edit):
    data = bytearray(path.read_bytes())
    edit(data)
    out = tmp_path / name
    out.write_bytes(bytes(data))
    return out


def test_truncated_file_is_refused_naming_the_file(saved, tmp_path):
    bad = _damaged(saved[0], tmp_path, "truncated.pt", lambda d: d.__delitem__(
        slice(len(d) // 2, None)))
    with pytest.raises(CheckpointError, match="truncated.pt"):
        load_model(bad)


def test_flipped_bytes_are_refused(saved, tmp_path):
    """Flip bytes inside the stored tensors: the zip may still read, the sha256 must not."""
    data = saved[0].read_bytes()
    obj = torch.load(saved[0], weights_only=True)
    some = next(v for v in obj["state_dict"].values() if v.numel() >= 8)
    raw = some.reshape(-1)[:8].numpy().tobytes()
    at = data.find(raw)
    assert at > 0

    def flip(d):
        for i in range(at, at + 8):
            d[i] ^= 0xFF

    bad = _damaged(saved[0], tmp_path, "flipped.pt", flip)
    with pytest.raises(CheckpointError, match="flipped.pt") as err:
        load_model(bad)
    assert "sha256" in str(err.value) or "corrupt" in str(err.value)


def test_wrong_sha_and_wrong_config_are_refused(saved, tmp_path):
    obj = torch.load(saved[0], weights_only=True)
    obj["card"]["sha256"] = "0" * 64
    torch.save(obj, tmp_path / "wrongsha.pt")
    with pytest.raises(CheckpointError, match="wrongsha.pt.*sha256"):
        read_checkpoint(tmp_path / "wrongsha.pt")
    obj = torch.load(saved[0], weights_only=True)
    obj["config"]["net"]["chanels"] = 3
    torch.save(obj, tmp_path / "badconfig.pt")
    with pytest.raises(CheckpointError, match="badconfig.pt.*chanels"):
        load_model(tmp_path / "badconfig.pt")
    obj = torch.load(saved[0], weights_only=True)
    obj["config"]["net"]["channels"] = obj["config"]["net"].get("channels", 8) + 4
    torch.save(obj, tmp_path / "mismatch.pt")
    with pytest.raises(CheckpointError, match="mismatch.pt"):
        load_model(tmp_path / "mismatch.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="garbage.pt"):
        load_model(tmp_path / "garbage.pt")
    assert issubclass(CheckpointError, ValueError)


def test_default_weights_missing_is_a_clear_file_not_found(monkeypatch, tmp_path):
    monkeypatch.setattr(checkpoint, "DEFAULT_WEIGHTS", tmp_path / "weights" / "default.pt")
    with pytest.raises(FileNotFoundError, match="no trained weights are installed"):
        load_model("default")
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        load_model(tmp_path / "nowhere.pt")


def test_training_state_round_trip(tmp_path):
    gen = torch.Generator().manual_seed(5)
    save_training_state(tmp_path / "state.pt", {"step": 11, "generator": gen.get_state(),
                                                "opt": {"lr": 1e-3}})
    state = load_training_state(tmp_path / "state.pt")
    assert state["step"] == 11 and torch.equal(state["generator"], gen.get_state())
    with pytest.raises(CheckpointError, match="state2.pt"):
        (tmp_path / "state2.pt").write_bytes(b"\x00" * 10)
        load_training_state(tmp_path / "state2.pt")


def test_set_default_model_from_path(saved, water):
    from pyscf_qhflow import config
    old = config.default_model
    try:
        pyscf_qhflow.set_default_model(str(saved[0]))
        assert config.default_model.name == "tiny"
        f = pyscf_qhflow.predict_fock(water)
        assert f.shape == (water.nao, water.nao)
    finally:
        config.default_model = old


def test_card_file_beside_the_weights_updates_the_card_not_the_tensors(saved, tmp_path):
    import json
    import shutil

    from pyscf_qhflow.checkpoint import card_path, write_card
    path = tmp_path / "m.pt"
    shutil.copy(saved[0], path)
    written = write_card(path, {"metrics": {"test_h_mae_uha": 99.0}, "sha256": "forged"})
    assert written == card_path(path) == tmp_path / "m.card.json"
    model = load_model(path, device="cpu")
    assert model.card["metrics"] == {"test_h_mae_uha": 99.0} and model.card["steps"] == 7
    assert model.card["sha256"] == saved[1]["sha256"]  # the card cannot claim other tensors
    bad = json.loads(written.read_text())
    bad["sha256"] = "0" * 64
    written.write_text(json.dumps(bad))
    with pytest.raises(CheckpointError, match="card describes tensors"):
        load_model(path, device="cpu")
