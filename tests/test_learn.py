"""``qhflow learn``: label a stream and train as it arrives; stopped by SIGTERM and resumed
with every molecule labelled exactly once and the step count continuing."""
from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import sys

import h5py
import pytest
import torch

from conftest import EXAMPLES
from test_label import NH3_XYZ
from test_train import tiny_model
from pyscf_qhflow.checkpoint import read_checkpoint
from pyscf_qhflow.cli.main import main
from pyscf_qhflow.data.dataset import ShardDataset
from pyscf_qhflow.data.label import molecules_from_smiles, molecules_from_xyz
from pyscf_qhflow.train.learn import NAMES_ATTR, LearnConfig, learn
from pyscf_qhflow.train.loop import TrainConfig

H2O2_XYZ = """4
hydrogen peroxide
O   0.0000   0.7375  -0.0528
O   0.0000  -0.7375  -0.0528
H   0.8190   0.8170   0.4220
H  -0.8190  -0.8170   0.4220
"""


def shard_names(shard_dir) -> list[str]:
    """Names of every labelled or failed molecule in the shards, duplicates kept."""
    names = []
    for path in sorted(shard_dir.glob("*.h5")):
        with h5py.File(path, "r") as f:
            names += json.loads(f.attrs[NAMES_ATTR])
            names += [x["name"] for x in json.loads(f.attrs["failures"])]
    return names


def logged_steps(out) -> list[int]:
    with open(out / "log.csv") as fh:
        return [int(row["step"]) for row in csv.DictReader(fh)]


def test_learn_stopped_by_sigterm_resumes_with_nothing_lost(tmp_path):
    xyz = tmp_path / "xyz"
    xyz.mkdir()
    # in stream (file name) order: ammonia, ethanol, fluoroacetamide (the slowest label,
    # still running when the first round ends), h2o2, methane, water
    for name in ("water", "methane", "ethanol", "fluoroacetamide"):
        shutil.copy(EXAMPLES / f"{name}.xyz", xyz)
    (xyz / "ammonia.xyz").write_text(NH3_XYZ)
    (xyz / "h2o2.xyz").write_text(H2O2_XYZ)
    stream = molecules_from_xyz([xyz])
    names = sorted(s.name for s in stream)
    out = tmp_path / "run"
    # the micro network, labelled with HF so labels take a fraction of a second
    cfg = TrainConfig(steps=30, batch_size=2, lr=2e-3, warmup_steps=2, val_every=1000,
                      log_every=2, ckpt_minutes=60.0, ema_decay=0.9, num_threads=1,
                      progress=False)
    lcfg = LearnConfig(chunk_size=1, label_jobs=1, min_round_steps=3)
    first = tiny_model()
    start_weights = {k: v.clone() for k, v in first.state_dict().items()}

    def sigterm_after_first_round(status):  # as `kill PID` would, mid-run
        os.kill(os.getpid(), signal.SIGTERM)

    s1 = learn(stream, out, first, cfg, lcfg, stream_info={"xyz": str(xyz)},
               on_round=sigterm_after_first_round)
    assert s1["stopped"] == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler restored
    done1 = shard_names(out / "shards")
    assert len(done1) == len(set(done1)) == s1["labelled"] + s1["failed"] >= 1
    assert len(done1) + s1["remaining"] == len(stream)  # finished labels were flushed
    assert s1["remaining"] >= 1  # and unfinished ones are left to the restart
    step1 = s1["step"]
    assert 3 <= step1 < cfg.steps
    weights = read_checkpoint(out / "weights.pt")
    assert weights["card"]["steps"] == step1
    assert any(not torch.equal(weights["state_dict"][k], v) for k, v in start_weights.items())

    # the same command again: resumes the stream and the training, runs to the end
    s2 = learn(stream, out, tiny_model(), cfg, lcfg, stream_info={"xyz": str(xyz)})
    assert s2["stopped"] is None and s2["remaining"] == 0
    done = shard_names(out / "shards")
    assert sorted(done) == names  # every molecule exactly once across the shards
    assert s2["labelled"] + s2["failed"] == len(stream) - len(done1)  # none labelled again
    assert s2["step"] == cfg.steps
    steps = logged_steps(out)
    assert steps == sorted(steps) and steps[-1] == cfg.steps  # the step count continued
    # ordinary shards, with H_init: what `qhflow train --data OUT/shards` reads
    data = ShardDataset(sorted((out / "shards").glob("*.h5")), xc="hf", with_hinit=True)
    assert len(data) == s1["labelled"] + s2["labelled"] == len(stream)
    assert (out / "best.pt").exists()
    # a different protocol in the same directory is refused
    with pytest.raises(ValueError, match="different learn run"):
        learn(stream, out, tiny_model(), cfg, LearnConfig(guess="minao"),
              stream_info={"xyz": str(xyz)})


def test_cli_learn_needs_one_stream(tmp_path, capsys):
    assert main(["learn", "--out", str(tmp_path / "run")]) == 2
    assert "give one stream" in capsys.readouterr().out


def test_smiles_stream_without_rdkit_says_what_to_install(tmp_path, monkeypatch):
    smi = tmp_path / "lib.smi"
    smi.write_text("# a library\nO water\nC\n")
    specs = molecules_from_smiles(smi)
    assert [s.name for s in specs] == ["water", "smiles_3"]
    monkeypatch.setitem(sys.modules, "rdkit", None)  # as if not installed
    with pytest.raises(ImportError, match="pip install rdkit"):
        specs[0].atoms()


def test_qm9_stream_is_seeded_and_excluding_never_reorders(monkeypatch):
    from test_data import _FakeQM9Table
    from pyscf_qhflow.data import label
    monkeypatch.setattr(label, "_qm9pack_table", lambda: _FakeQM9Table(range(1, 300)))
    order = [s.qm9_index for s in label.molecules_from_qm9(1, None, seed=3, shuffle=True)]
    assert sorted(order) == [q for q in range(1, 300) if q % 50]  # held out never
    assert order != sorted(order)
    again = label.molecules_from_qm9(1, None, seed=3, shuffle=True, exclude=order[:10] + [order[20]])
    assert [s.qm9_index for s in again] == order[10:20] + order[21:]


def test_learn_replays_shards_and_never_labels_their_qm9_molecules(tmp_path):
    from pyscf_qhflow.data.label import label_molecule, shard_attrs, write_shard
    from pyscf_qhflow.data.splits import split_of_key
    # two QM9 indices the split rule puts in train and in validation
    q_train = next(q for q in range(1, 500) if q % 50 and split_of_key(f"qm9:{q}") == 0)
    q_val = next(q for q in range(1, 500) if q % 50 and split_of_key(f"qm9:{q}") == 1)
    water = label_molecule(str(EXAMPLES / "water.xyz"), xc="hf", with_hinit=True)
    replay = tmp_path / "replay"
    replay.mkdir()
    write_shard(replay / "qm9_hf_def2svp_000.h5",
                [dict(water, qm9_index=q_train), dict(water, qm9_index=q_val)],
                shard_attrs(xc="hf"))
    xyz = tmp_path / "xyz"
    xyz.mkdir()
    shutil.copy(EXAMPLES / "water.xyz", xyz / f"dsgdb9nsd_{q_train:06d}.xyz")  # in the replay
    shutil.copy(EXAMPLES / "methane.xyz", xyz)
    seen = []
    cfg = TrainConfig(steps=6, batch_size=1, warmup_steps=1, val_every=1000, ckpt_minutes=60.0,
                      num_threads=1, progress=False)
    s = learn(molecules_from_xyz([xyz]), tmp_path / "run", tiny_model(), cfg,
              LearnConfig(guess="minao", min_round_steps=2), replay=[str(replay / "*.h5")],
              on_round=seen.append)
    assert s["stopped"] is None and s["step"] == cfg.steps
    assert shard_names(tmp_path / "run" / "shards") == ["methane"]  # the replayed one skipped
    assert seen[0]["train_molecules"] >= 1  # the replay's train split, from the first round
    assert seen[-1]["val_mae_uha"] > 0  # validated on the replay's validation split
