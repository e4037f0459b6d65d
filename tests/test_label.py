"""Labelling: CLI -> shards -> ShardDataset round trip against direct PySCF runs,
resuming a killed run, job-array sharding, and recorded failures."""
from __future__ import annotations

import json
import shutil
import sys

import h5py
import numpy as np
import pytest
from pyscf import dft, gto

from conftest import EXAMPLES
from pyscf_qhflow.cli.main import main
from pyscf_qhflow.data import label
from pyscf_qhflow.data.label import MoleculeSpec, label_to_shards
from pyscf_qhflow.data.dataset import ShardDataset
from pyscf_qhflow.data.shardfile import find_shards

NH3_XYZ = """4
ammonia
N   0.0000   0.0000   0.1162
H   0.0000   0.9397  -0.2711
H   0.8138  -0.4699  -0.2711
H  -0.8138  -0.4699  -0.2711
"""

# the layout of FORMAT.md (datasets and dtypes) and the attribute set of the shared shards
FORMAT_DTYPES = {"qm9_index": np.int64, "natoms": np.int32, "atom_offset": np.int64,
                 "Z": np.int8, "R": np.float64, "nao": np.int32, "fock_offset": np.int64,
                 "fock": np.float32, "energy": np.float64, "scf_cycles_minao": np.int32,
                 "converged": np.bool_, "scf_cycles": np.int32, "scf_conv_tol": np.float64}
FORMAT_ATTRS = {"ao_order", "basis", "cart", "charge", "conv_tol", "fock_layout", "grid_level",
                "init_guess", "pyscf_version", "source", "spin", "units", "xc"}

# tiny molecules for the driver tests (sto-3g, LDA: fractions of a second each)
FAST = dict(xc="lda,vwn", basis="sto-3g", grid_level=1, conv_tol=1e-9)
H2 = MoleculeSpec("h2", qm9_index=1, Z=(1, 1), R=((0, 0, 0), (0, 0, 0.74)))
HF = MoleculeSpec("hf", qm9_index=2, Z=(9, 1), R=((0, 0, 0), (0, 0, 0.92)))
LIH = MoleculeSpec("lih", qm9_index=3, Z=(3, 1), R=((0, 0, 0), (0, 0, 1.6)))


def qhflow_label(argv: list[str]) -> int:
    """``qhflow label ARGV`` through the real entry point."""
    return main(["label", *argv])


@pytest.fixture
def xyz_dir(tmp_path):
    d = tmp_path / "xyz"
    d.mkdir()
    shutil.copy(EXAMPLES / "water.xyz", d)
    shutil.copy(EXAMPLES / "methane.xyz", d)
    (d / "ammonia.xyz").write_text(NH3_XYZ)
    return d


def test_cli_label_roundtrip_matches_pyscf(xyz_dir, tmp_path):
    out = tmp_path / "labels"
    rc = qhflow_label([str(xyz_dir), "--out", str(out), "--grid-level", "1",
               "--shard-size", "2", "--no-progress"])
    assert rc == 0
    paths = find_shards(out)
    assert [p.name for p in paths] == ["qm9_b3lyp_def2svp_000.h5", "qm9_b3lyp_def2svp_001.h5"]
    with h5py.File(paths[0]) as f:
        assert set(FORMAT_ATTRS) <= set(f.attrs)
        assert f.attrs["grid_level"] == 1 and f.attrs["xc"] == "b3lyp"
        for name, dtype in FORMAT_DTYPES.items():
            assert f[name].dtype == dtype, name
        assert h5py.check_string_dtype(f["smiles"].dtype) is not None
        assert json.loads(f.attrs["failures"]) == []

    ds = ShardDataset(out)
    assert len(ds) == 3
    for i, name in enumerate(["ammonia", "methane", "water"]):  # sorted file order
        rec = ds[i]
        mol = gto.M(atom=str(xyz_dir / f"{name}.xyz"), basis="def2-svp", verbose=0)
        np.testing.assert_array_equal(rec["Z"], mol.atom_charges())
        np.testing.assert_allclose(rec["pos"], mol.atom_coords(unit="Angstrom"), atol=1e-12)
        mf = dft.RKS(mol, xc="b3lyp")
        mf.grids.level = 1
        mf.conv_tol = 1e-10
        e_ref = mf.kernel()
        f_ref = mf.get_fock(dm=mf.make_rdm1())
        assert rec["fock"].shape == (mol.nao, mol.nao)
        np.testing.assert_array_equal(rec["fock"], rec["fock"].T)
        np.testing.assert_allclose(rec["fock"], f_ref, rtol=1e-6, atol=1e-6)
        assert abs(rec["energy"] - e_ref) < 1e-8
        assert rec["qm9_index"] == -1
        with h5py.File(ds.locate(i)[0]) as f:
            assert f["scf_cycles_minao"][ds.locate(i)[1]] == mf.cycles


def test_killed_run_resumes_at_missing_shard(tmp_path, monkeypatch):
    out = tmp_path / "labels"
    real = label.label_molecule
    calls = []

    def killed_on_third(atoms, **kw):
        calls.append(kw)
        if len(calls) == 3:
            raise KeyboardInterrupt  # what a kill looks like to the running loop
        return real(atoms, **kw)

    monkeypatch.setattr(label, "label_molecule", killed_on_third)
    with pytest.raises(KeyboardInterrupt):
        label_to_shards([H2, HF, LIH], out, shard_size=1, progress=False, **FAST)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["manifest.json", "qm9_ldavwn_sto3g_000.h5", "qm9_ldavwn_sto3g_001.h5"]
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.h5")}

    calls.clear()
    monkeypatch.setattr(label, "label_molecule", lambda atoms, **kw: (calls.append(kw),
                                                                      real(atoms, **kw))[1])
    counts = label_to_shards([H2, HF, LIH], out, shard_size=1, progress=False, **FAST)
    assert len(calls) == 1
    assert counts["shards_written"] == 1 and counts["shards_skipped"] == 2
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*_00[01].h5")} == mtimes
    ds = ShardDataset(out / "qm9_ldavwn_sto3g_*.h5", xc="lda,vwn", basis="sto-3g")
    assert list(ds.qm9_index) == [1, 2, 3]
    # a complete output directory computes nothing
    calls.clear()
    assert label_to_shards([H2, HF, LIH], out, shard_size=1, progress=False,
                           **FAST)["shards_written"] == 0
    assert calls == []


def test_job_array_and_manifest(tmp_path):
    out = tmp_path / "labels"
    counts = label_to_shards([H2, HF, LIH], out, shard_size=1, shard=(1, 2), progress=False,
                             **FAST)
    assert counts["shards_written"] == 1
    assert [p.name for p in out.glob("*.h5")] == ["qm9_ldavwn_sto3g_001.h5"]
    with pytest.raises(ValueError, match="different labelling run"):
        label_to_shards([H2, LIH], out, shard_size=1, progress=False, **FAST)


def test_failures_recorded_not_dropped(tmp_path):
    radical = MoleculeSpec("oh", qm9_index=4, Z=(8, 1), R=((0, 0, 0), (0, 0, 0.97)))
    clash = MoleculeSpec("clash", qm9_index=5, Z=(1, 1), R=((0, 0, 0), (0, 0, 0.01)))
    out = tmp_path / "labels"
    counts = label_to_shards([H2, radical, clash], out, shard_size=3, progress=False, **FAST)
    assert counts == {"shards_written": 1, "shards_skipped": 0, "labelled": 1, "failed": 2,
                      "unconverged": 0}
    (path,) = find_shards(out / "*.h5")
    with h5py.File(path) as f:
        failures = json.loads(f.attrs["failures"])
        assert list(f["qm9_index"][()]) == [1]
    assert [(x["name"], x["qm9_index"]) for x in failures] == [("oh", 4), ("clash", 5)]
    assert "closed-shell" in failures[0]["reason"]
    assert "Angstrom apart" in failures[1]["reason"]


def test_unconverged_kept_flagged_and_excluded(tmp_path):
    out = tmp_path / "labels"
    fast = dict(FAST, conv_tol=1e-14)
    counts = label_to_shards([HF], out, shard_size=1, max_cycle=1, progress=False, **fast)
    assert counts["unconverged"] == 1
    (path,) = find_shards(out / "*.h5")
    with h5py.File(path) as f:
        assert not f["converged"][0]
        assert "not converged" in json.loads(f.attrs["failures"])[0]["reason"]
    assert len(ShardDataset(path, xc="lda,vwn", basis="sto-3g")) == 0
    assert len(ShardDataset(path, xc="lda,vwn", basis="sto-3g", exclude_unconverged=False)) == 1


def test_callback_sees_every_cycle_with_its_fock_matrix():
    """label_molecule's callback is PySCF's mf.callback: once per cycle, with the
    cycle's Fock matrix (what benchmarks/label_source_e2e.py keeps as a pseudo-label)."""
    seen = []
    out = label.label_molecule(HF.atoms(), callback=lambda envs: seen.append(
        (int(envs["cycle"]), np.array(envs["fock"]))), **FAST)
    assert [c for c, _ in seen] == list(range(out["cycles"]))
    assert all(f.shape == out["fock"].shape for _, f in seen)
    # the last cycle's matrix is the converged one (to the convergence threshold)
    assert np.abs(seen[-1][1] - out["fock"]).max() < 1e-3


def test_qm9_without_qm9pack_says_what_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "qm9pack", None)
    rc = qhflow_label(["--qm9", "1:100", "--out", str(tmp_path / "o"), "--no-progress"])
    assert rc == 2
    assert "pip install pyscf-qhflow[data]" in capsys.readouterr().out


def test_held_out_qm9_names_skipped(tmp_path):
    for q in (49, 50, 100, 101):
        (tmp_path / f"dsgdb9nsd_{q:06d}.xyz").write_text(NH3_XYZ)
    specs = label.molecules_from_xyz([tmp_path])
    assert [s.qm9_index for s in specs] == [49, 101]


def test_labelling_stores_hinit_in_the_shard(tmp_path):
    """H_init built on the labeller's grids is stored beside the label, equals a fresh
    minao_fock (to float32 storage), and the dataset reads it without any cache."""
    from pyscf_qhflow.hinit import minao_fock

    out = tmp_path / "labels"
    water = MoleculeSpec("water", qm9_index=7, xyz=str(EXAMPLES / "water.xyz"))
    label_to_shards([HF, water], out, shard_size=2, progress=False, **FAST)
    (path,) = sorted(out.glob("*.h5"))
    with h5py.File(path) as f:
        assert f["hinit"].shape == f["fock"].shape and f["hinit"].dtype == np.float32
        assert list(f["scf_init_guess"].asstr()[()]) == ["minao", "minao"]
        np.testing.assert_array_equal(f["scf_conv_tol"][()], [1e-9, 1e-9])
    ds = ShardDataset(out / "*.h5", xc="lda,vwn", basis="sto-3g", grid_level=1,
                      cache_dir=tmp_path / "unused_cache", with_hinit=True)
    for i in range(2):
        rec = ds[i]
        mol = gto.M(atom=[(int(z), r) for z, r in zip(rec["Z"], rec["pos"])], basis="sto-3g",
                    unit="Angstrom", verbose=0)
        np.testing.assert_allclose(rec["hinit"], minao_fock(mol, xc="lda,vwn", grid_level=1),
                                   rtol=0, atol=5e-6)
    assert not (tmp_path / "unused_cache").exists()  # nothing was built or cached

    # --no-hinit writes no hinit dataset
    rc = qhflow_label([str(EXAMPLES / "water.xyz"), "--out", str(tmp_path / "b"), "--xc",
                       "lda,vwn", "--basis", "sto-3g", "--grid-level", "1", "--no-hinit",
                       "--no-progress"])
    assert rc == 0
    (path,) = sorted((tmp_path / "b").glob("*.h5"))
    with h5py.File(path) as f:
        assert "hinit" not in f and "fock" in f


def test_fast_label_from_the_model_matches_the_tight_label(tmp_path):
    """--guess qhflow: the SCF starts from the shipped model's density, converges to
    conv_tol 1e-8 / conv_tol_grad 1e-4, and lands on the tight MinAO label."""
    mol = gto.M(atom=str(EXAMPLES / "water.xyz"), basis="def2-svp", verbose=0)
    fast = label.label_molecule(mol, grid_level=1, guess="qhflow")
    tight = label.label_molecule(mol, grid_level=1, guess="minao")
    assert fast["scf_init_guess"] == "qhflow" and fast["scf_conv_tol"] == 1e-8
    assert tight["scf_init_guess"] == "minao" and tight["scf_conv_tol"] == 1e-10
    assert fast["converged"] and fast["cycles"] < tight["cycles"]
    assert np.abs(fast["fock"] - tight["fock"]).mean() < 1e-6  # Hartree
    assert abs(fast["energy"] - tight["energy"]) < 1e-7
    assert fast["hinit"].shape == fast["fock"].shape  # H_init came with the guess
    rc = qhflow_label([str(EXAMPLES / "water.xyz"), "--out", str(tmp_path / "fast"),
                       "--guess", "qhflow", "--grid-level", "1", "--no-progress"])
    assert rc == 0
    (path,) = sorted((tmp_path / "fast").glob("*.h5"))
    with h5py.File(path) as f:
        assert f.attrs["conv_tol"] == 1e-8 and f.attrs["conv_tol_grad"] == 1e-4
        assert f["scf_init_guess"].asstr()[0] == "qhflow" and "scf_cycles_minao" not in f
        assert "hinit" in f