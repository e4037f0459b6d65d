"""Training: losses, schedule, EMA, the loop (loss goes down, exact resume), the CLI."""
from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest
import torch
from pyscf import gto, scf

from pyscf_qhflow import hinit, keys
from pyscf_qhflow.batching import make_batch
from pyscf_qhflow.model import ModelConfig, Protocol, QHFlowModel
from pyscf_qhflow.train.loop import EMA, TrainConfig, fit, lr_factor
from pyscf_qhflow.train.loss import (density_response_data, hamiltonian_loss,
                                     linear_density_error, lowdin_orthogonalizer,
                                     occupied_eigenvalue_loss)

from conftest import example_mol

GEOMS = {
    "ammonia": "N 0 0 0.1; H 0.94 0 -0.27; H -0.47 0.81 -0.27; H -0.47 -0.81 -0.27",
}


def hf_record(mol) -> dict:
    """A training record labelled with HF (fast): F*, H_init (MinAO density, HF), S."""
    mf = scf.RHF(mol).run(conv_tol=1e-9)
    return {"Z": mol.atom_charges().astype(np.int64), "pos": mol.atom_coords(unit="Angstrom"),
            "fock": mf.get_fock(), "hinit": hinit.minao_fock(mol, xc="hf"),
            "overlap": hinit.overlap(mol)}


@pytest.fixture(scope="module")
def records():
    mols = [example_mol("water"), example_mol("methane"),
            gto.M(atom=GEOMS["ammonia"], basis="def2-svp", verbose=0)]
    return [hf_record(m) for m in mols]


# the real network, smaller than the tiny preset so 50 steps take seconds on 2 cores
MICRO_NET = dict(channels=4, num_layers=1, pair_channels=4, tp_channels=2, block_channels=2,
                 elem_dim=4, time_dim=8, block_inputs=False)


def tiny_model(seed: int = 0) -> QHFlowModel:
    """The real QHFlowNet at micro size (tiny preset + MICRO_NET), labelled for HF data."""
    cfg = ModelConfig.preset("tiny")
    cfg = ModelConfig(name="micro-hf", net={**cfg.net, **MICRO_NET}, flow=cfg.flow,
                      protocol=Protocol(xc="hf", basis=cfg.protocol.basis,
                                        elements=cfg.protocol.elements))
    return QHFlowModel.from_config(cfg, seed=seed)


# ------------------------------------------------------------------ losses

def test_hamiltonian_loss_counts_real_entries_only(records):
    model = tiny_model()
    batch, _ = make_batch(records[:2], model.basis_layout, 5.0, 15.0, dtype=torch.float64)
    on, off = batch[keys.HINIT_ONSITE], batch[keys.HINIT_OFFSITE]
    target = (on + 1.0, off + 1.0)  # every entry (padding too) off by exactly 1
    loss, m = hamiltonian_loss((on, off), target, batch[keys.SLOT_MASK],
                               batch[keys.PAIR_INDEX], mae_weight=1.0, mse_weight=2.0)
    assert m["mae"] == pytest.approx(1.0) and m["mse"] == pytest.approx(1.0)
    assert float(loss) == pytest.approx(3.0)


def test_occupied_eigenvalue_loss(records):
    rec = records[0]
    x = torch.as_tensor(lowdin_orthogonalizer(rec["overlap"]))
    s = torch.as_tensor(rec["overlap"])
    torch.testing.assert_close(x @ s @ x, torch.eye(len(s), dtype=torch.float64))
    f_ref = torch.as_tensor(rec["fock"])
    assert float(occupied_eigenvalue_loss([f_ref.clone()], [f_ref], [x], [5])) < 1e-12
    shift = torch.tensor(0.01, dtype=torch.float64, requires_grad=True)
    # F + c S shifts every orbital energy by c exactly
    loss = occupied_eigenvalue_loss([f_ref + shift * s], [f_ref], [x], [5])
    assert float(loss.detach()) == pytest.approx(0.01, abs=1e-10)
    loss.backward()
    assert float(shift.grad) == pytest.approx(1.0, abs=1e-8)


def test_lr_schedule_warmup_then_cosine():
    cfg = TrainConfig(steps=100, warmup_steps=10, min_lr_ratio=0.1)
    f = [lr_factor(s, cfg) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:]))
    assert lr_factor(100, cfg) == pytest.approx(0.1)


def test_train_config_rejects_unknown_keys():
    with pytest.raises(ValueError, match="grad_clipping"):
        TrainConfig.from_dict({"grad_clipping": 1.0})


def test_ema_tracks_weights():
    lin = torch.nn.Linear(2, 2)
    ema = EMA(lin, decay=0.5)
    with torch.no_grad():
        lin.weight.add_(1.0)
    before = ema.module.weight.clone()
    ema.update(lin)  # first update: effective decay min(0.5, 2/11)
    d = 2 / 11
    torch.testing.assert_close(ema.module.weight, d * before + (1 - d) * lin.weight)


@pytest.mark.parametrize("tau", [0.0, 0.01])
def test_linear_density_error_is_the_first_order_guess_density_error(records, tau):
    from pyscf_qhflow.benchmark import fock_metrics
    from pyscf_qhflow.guess.overlap_damping import damp_residual

    rec = records[1]  # methane: triply degenerate occupied levels
    fock, h0, s = rec["fock"], rec["hinit"], rec["overlap"]
    nocc = int(rec["Z"].sum()) // 2
    data = density_response_data(fock, h0, s, nocc, tau)
    rng = np.random.default_rng(0)
    noise = rng.normal(size=fock.shape)
    noise = noise + noise.T
    # the residual that reproduces F* exactly after damping has zero density error
    exact = np.linalg.solve(_damping(s, tau), np.linalg.solve(_damping(s, tau), fock - h0).T).T
    for scale in (1e-4, 1e-5):
        r = exact + scale * noise
        linear = float(linear_density_error([torch.as_tensor(r)], [data]))
        true = fock_metrics(h0 + damp_residual(r, s, tau), fock, s, nocc)["density_err"]
        assert linear == pytest.approx(true, rel=20 * scale / 1e-4 * 1e-3), (scale, linear, true)
    zero = torch.zeros_like(torch.as_tensor(exact), requires_grad=True)
    loss = linear_density_error([zero], [data])  # residual 0: the guess is H_init's
    loss.backward()
    assert loss > 0.1 and torch.isfinite(zero.grad).all()
    with pytest.raises(ValueError, match="nocc < nao"):
        density_response_data(fock, h0, s, s.shape[0], tau)


def _damping(s, tau):
    from pyscf_qhflow.guess.overlap_damping import overlap_damping_matrix
    return overlap_damping_matrix(s, tau) if tau > 0 else np.eye(len(s))


# ------------------------------------------------------------------ loop

def _cfg(**kw) -> TrainConfig:
    base = dict(steps=50, batch_size=2, lr=1e-2, warmup_steps=5, val_every=25, log_every=5,
                ema_decay=0.9, progress=False, num_threads=2)
    base.update(kw)
    return TrainConfig(**base)


def test_fifty_steps_lower_the_loss_and_write_outputs(records, tmp_path):
    model = tiny_model()
    summary = fit(model, records, records, tmp_path, _cfg(choose_num_steps=(0, 2)),
                  val_indices=[0])
    losses = [l for _, l in summary["history"]]
    assert len(losses) == 50
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])
    assert (tmp_path / "best.pt").is_file() and (tmp_path / "state.pt").is_file()
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert rows[-1]["step"] == "50" and float(rows[-1]["val_mae_uha"]) > 0
    assert np.isfinite(summary["best_val_mae_uha"])
    card = torch.load(tmp_path / "best.pt", weights_only=True)["card"]
    by_k = card["metrics"]["val_h_mae_uha_by_num_steps"]
    assert set(by_k) == {"0", "2"}
    k = card["metrics"]["flow_num_steps"]
    assert by_k[str(k)] == min(by_k.values())


def test_density_loss_and_density_validation(records, tmp_path):
    model = tiny_model()
    model.config = dataclasses.replace(model.config, overlap_damping=0.01)
    summary = fit(model, records, records, tmp_path,
                  _cfg(steps=30, density_weight=0.01, val_metric="density", val_every=10),
                  val_indices=[0, 1])
    losses = [l for _, l in summary["history"]]
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
    assert summary["val_metric"] == "density" and 0 < summary["best_val_score"] < 10
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    scored = [float(r["val_density_err"]) for r in rows if r["val_density_err"]]
    assert len(scored) == 3 and min(scored) == pytest.approx(summary["best_val_score"], rel=1e-4)
    card = torch.load(tmp_path / "best.pt", weights_only=True)["card"]
    assert card["metrics"]["val_density_err"] == pytest.approx(summary["best_val_score"])
    assert card["train_config"]["density_weight"] == 0.01
    with pytest.raises(ValueError, match="val_metric"):
        TrainConfig(val_metric="energy")
    with pytest.raises(ValueError, match="H MAE"):
        TrainConfig(val_metric="density", choose_num_steps=(0, 2))


def test_resume_continues_exactly(records, tmp_path):
    # bit-exact only on CPU: CUDA scatter-adds sum in a run-dependent order
    cfg = _cfg(steps=4, val_every=100, log_every=1, device="cpu")
    straight = tiny_model()
    fit(straight, records, None, tmp_path / "a", cfg)
    chunked = tiny_model()
    first = fit(chunked, records, None, tmp_path / "b", cfg, stop_at=2)
    assert first["step"] == 2 and first["stopped_early"]
    resumed = tiny_model(seed=123)  # weights come from state.pt, not from the seed
    second = fit(resumed, records, None, tmp_path / "b", cfg, resume=True)
    assert second["step"] == 4 and [s for s, _ in second["history"]] == [3, 4]
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        fit(tiny_model(), records, None, tmp_path / "c", cfg, resume=True)


def test_resume_keeps_the_saved_peak_lr_and_card_in_best_pt(records, tmp_path):
    """A resumed run's best.pt card states the lr the schedule really used (the saved
    run's, not the resuming command's default) and keeps the first run's init_from."""
    from pyscf_qhflow.checkpoint import read_checkpoint
    fit(tiny_model(), records, records, tmp_path, _cfg(steps=4, lr=2e-3, val_every=2),
        card={"init_from": "weights/first.pt"}, stop_at=2)
    resumed = fit(tiny_model(seed=7), records, records, tmp_path,
                  _cfg(steps=4, lr=5e-4, val_every=2), card={"init_from": None}, resume=True)
    assert resumed["step"] == 4
    card = read_checkpoint(tmp_path / "best.pt")["card"]
    assert card["train_config"]["lr"] == pytest.approx(2e-3)
    assert card["init_from"] == "weights/first.pt"


def test_resume_accepts_older_state_layouts_and_keeps_the_runs_inference_options(records,
                                                                                  tmp_path):
    """A state.pt written before residual_range was removed (it stored null) and with the
    run's own tau resumes into a model built from the bare preset, with that tau."""
    from pyscf_qhflow.checkpoint import load_training_state, save_training_state
    cfg = _cfg(steps=4, val_every=100)
    fit(tiny_model(), records, None, tmp_path, cfg)
    state = load_training_state(tmp_path / "state.pt")
    state.pop("format")
    state["model_config"] = {**state["model_config"], "residual_range": None,
                             "overlap_damping": 0.01}
    save_training_state(tmp_path / "state.pt", state)
    (tmp_path / "best.pt").unlink()  # rewritten at the end from the EMA copy of the model
    resumed = tiny_model(seed=5)
    fit(resumed, records, None, tmp_path, _cfg(steps=6, val_every=100), resume=True)
    assert resumed.config.overlap_damping == 0.01
    from pyscf_qhflow.checkpoint import read_checkpoint
    assert read_checkpoint(tmp_path / "best.pt")["config"]["overlap_damping"] == 0.01
    other = tiny_model()
    other.config = dataclasses.replace(other.config, name="another")
    with pytest.raises(ValueError, match="saved for model config"):
        fit(other, records, None, tmp_path, _cfg(steps=8, val_every=100), resume=True)


def test_single_process_never_touches_torch_distributed(records, tmp_path, monkeypatch):
    import torch.distributed as dist

    def forbidden(*args, **kwargs):
        raise AssertionError("torch.distributed used in a single-process run")

    monkeypatch.setattr(dist, "init_process_group", forbidden)
    monkeypatch.setattr(dist, "broadcast", forbidden)
    monkeypatch.setenv("WORLD_SIZE", "1")
    fit(tiny_model(), records, None, tmp_path, _cfg(steps=2, eig_weight=0.1))
    assert (tmp_path / "best.pt").is_file()
    # under torchrun's environment the process group is initialised, before any file
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(AssertionError, match="torch.distributed used"):
        fit(tiny_model(), records, None, tmp_path / "ddp", _cfg(steps=2))
    assert not (tmp_path / "ddp").exists()


def test_cli_train_end_to_end(records, tmp_path, monkeypatch):
    import json

    from pyscf_qhflow.checkpoint import load_model
    from pyscf_qhflow.cli.main import main
    from pyscf_qhflow.data.label import shard_attrs, write_shard

    shard = [{"Z": r["Z"], "pos": r["pos"], "fock": r["fock"], "energy": 0.0, "cycles": 1,
              "converged": True, "qm9_index": q} for q, r in zip((1001, 1002, 1028), records)]
    # split_by_qm9_index (seed 0) puts 1001 and 1002 in train, 1028 in validation
    write_shard(tmp_path / "data" / "qm9_b3lyp_def2svp_000.h5", shard,
                shard_attrs(xc="hf", basis="def2-svp"))
    config = tiny_model().config.to_dict()
    (tmp_path / "tiny-hf.json").write_text(json.dumps(config))
    args = ["train", "--config", str(tmp_path / "tiny-hf.json"), "--data",
            str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--steps", "3",
            "--batch-size", "2", "--val-every", "2", "--no-progress", "--choose-k", "0", "1",
            "--cache-dir", str(tmp_path / "cache")]
    assert main(args) == 0
    model = load_model(tmp_path / "run" / "best.pt", device="cpu")
    assert model.card["split"]["method"] == "split_by_qm9_index"
    assert model.card["data"]["molecules"] == 3 and model.xc == "hf"
    assert model.card["data"]["shards"] == ["data/qm9_b3lyp_def2svp_000.h5"]
    assert (model.card["split"]["train"], model.card["split"]["val"]) == (2, 1)
    assert model.flow.num_steps == model.card["metrics"]["flow_num_steps"] in (0, 1)
    assert main(args[:-2] + ["--resume", "--steps", "4", "--cache-dir",
                             str(tmp_path / "cache")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "run" / "log.csv")))
    assert rows[-1]["step"] == "4"


def test_cli_train_sigterm_saves_the_state_and_resume_continues(records, tmp_path,
                                                                monkeypatch):
    """SIGTERM ends `qhflow train` after the current step with best.pt and state.pt."""
    import os
    import signal

    from pyscf_qhflow.cli.main import main
    from pyscf_qhflow.data.label import shard_attrs, write_shard
    from pyscf_qhflow.train import loop

    shard = [{"Z": r["Z"], "pos": r["pos"], "fock": r["fock"], "energy": 0.0, "cycles": 1,
              "converged": True, "qm9_index": q} for q, r in zip((1001, 1002, 1028), records)]
    write_shard(tmp_path / "data" / "qm9_b3lyp_def2svp_000.h5", shard,
                shard_attrs(xc="hf", basis="def2-svp"))
    (tmp_path / "tiny-hf.json").write_text(json.dumps(tiny_model().config.to_dict()))
    step = loop.training_step
    calls = []

    def terminate_in_step_2(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # as `kill PID` from a shell
        return step(*args, **kwargs)

    monkeypatch.setattr(loop, "training_step", terminate_in_step_2)
    args = ["train", "--config", str(tmp_path / "tiny-hf.json"), "--data",
            str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--steps", "1000",
            "--batch-size", "2", "--val-every", "100", "--no-progress",
            "--cache-dir", str(tmp_path / "cache")]
    previous = signal.getsignal(signal.SIGTERM)
    assert main(args) == 0
    assert signal.getsignal(signal.SIGTERM) is previous  # handlers restored
    assert (tmp_path / "run" / "best.pt").exists()
    state = torch.load(tmp_path / "run" / "state.pt", weights_only=False)
    assert state["step"] == 2
    monkeypatch.setattr(loop, "training_step", step)
    assert main(args[:-2] + ["--resume", "--steps", "4", "--cache-dir",
                             str(tmp_path / "cache")]) == 0
    assert torch.load(tmp_path / "run" / "state.pt", weights_only=False)["step"] == 4
    assert len(calls) == 2  # the first run stopped in its second step


def test_cli_train_init_from_starts_at_the_checkpoint_weights(records, tmp_path):
    from pyscf_qhflow.checkpoint import load_model, save_checkpoint
    from pyscf_qhflow.cli.main import main
    from pyscf_qhflow.data.label import shard_attrs, write_shard

    shard = [{"Z": r["Z"], "pos": r["pos"], "fock": r["fock"], "energy": 0.0, "cycles": 1,
              "converged": True, "qm9_index": q} for q, r in zip((1001, 1002, 1028), records)]
    write_shard(tmp_path / "data" / "qm9_b3lyp_def2svp_000.h5", shard,
                shard_attrs(xc="hf", basis="def2-svp"))
    start = tiny_model(seed=7)
    save_checkpoint(tmp_path / "start.pt", start, {"data": "test"})
    # lr 0: the fine-tuned weights must be exactly the starting checkpoint's
    args = ["train", "--init-from", str(tmp_path / "start.pt"), "--data",
            str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--steps", "2",
            "--batch-size", "2", "--lr", "0", "--ema-decay", "0", "--val-every", "2",
            "--no-progress", "--device", "cpu", "--cache-dir", str(tmp_path / "cache")]
    assert main(args) == 0
    tuned = load_model(tmp_path / "run" / "best.pt", device="cpu")
    assert tuned.card["init_from"] == str(tmp_path / "start.pt")
    assert tuned.config == start.config
    for (name, a), b in zip(start.state_dict().items(), tuned.state_dict().values()):
        assert torch.equal(a, b), name


def test_cli_train_keep_unconverged_trains_on_flagged_records(records, tmp_path):
    """Records with converged = False (pseudo-labels) are skipped unless --keep-unconverged."""
    from pyscf_qhflow.checkpoint import load_model
    from pyscf_qhflow.cli.main import main
    from pyscf_qhflow.data.label import shard_attrs, write_shard

    shard = [{"Z": r["Z"], "pos": r["pos"], "fock": r["fock"], "energy": 0.0, "cycles": 1,
              "converged": q != 1002, "qm9_index": q}
             for q, r in zip((1001, 1002, 1028), records)]
    write_shard(tmp_path / "data" / "qm9_b3lyp_def2svp_000.h5", shard,
                shard_attrs(xc="hf", basis="def2-svp"))
    start = tmp_path / "start.pt"
    from pyscf_qhflow.checkpoint import save_checkpoint
    save_checkpoint(start, tiny_model(seed=7), {"data": "test"})
    for flag, molecules, train in (([], 2, 1), (["--keep-unconverged"], 3, 2)):
        run = tmp_path / f"run{len(flag)}"
        args = ["train", "--init-from", str(start), "--data", str(tmp_path / "data"),
                "--out", str(run), "--steps", "1", "--batch-size", "2", "--val-every", "1",
                "--no-progress", "--device", "cpu", "--cache-dir", str(tmp_path / "cache")]
        assert main(args + flag) == 0
        card = load_model(run / "best.pt", device="cpu").card
        assert card["data"]["molecules"] == molecules and card["split"]["train"] == train
