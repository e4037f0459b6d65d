"""ShardDataset, protocol checks, the H_init cache, minao_fock and the QM9-index split.

Shards are written here with write_shard from small molecules (never ../shared);
their Fock labels are core Hamiltonians, which is all reading needs.
"""
from __future__ import annotations

import os
import pickle

import h5py
import numpy as np
import pytest
from pyscf import dft, gto, scf

from pyscf_qhflow import hinit
from pyscf_qhflow.data.dataset import ShardDataset
from pyscf_qhflow.data.hinit_cache import precompute_hinit
from pyscf_qhflow.data.label import shard_attrs, write_shard
from pyscf_qhflow.data.shardfile import find_shards
from pyscf_qhflow.data.splits import split_by_qm9_index, split_indices

GEOMS = {  # Angstrom
    "water": [(8, (0.0, 0.0, 0.1173)), (1, (0.0, 0.7572, -0.4692)),
              (1, (0.0, -0.7572, -0.4692))],
    "hf": [(9, (0.0, 0.0, 0.0)), (1, (0.0, 0.0, 0.917))],
    "h2": [(1, (0.0, 0.0, 0.0)), (1, (0.0, 0.0, 0.741))],
}
GRID = 1  # H_init grid level in these tests (fast)


def _mol(name, basis="def2-svp", **kw):
    return gto.M(atom=GEOMS[name], basis=basis, unit="Angstrom", verbose=0, **kw)


def _records(names, basis="def2-svp", converged=None, shift=0.0):
    out = []
    for k, name in enumerate(names):
        mol = _mol(name, basis)
        out.append({"Z": mol.atom_charges(), "pos": mol.atom_coords(unit="Angstrom") + shift,
                    "fock": mol.intor("int1e_kin") + mol.intor("int1e_nuc"),
                    "energy": -1.5 * (k + 1), "cycles": 10 + k,
                    "converged": True if converged is None else converged[k],
                    "qm9_index": 100 + k, "smiles": name})
    return out


@pytest.fixture
def shard_dir(tmp_path):
    d = tmp_path / "data"
    write_shard(d / "qm9_b3lyp_def2svp_000.h5", _records(["water", "hf"]), shard_attrs())
    write_shard(d / "qm9_b3lyp_def2svp_001.h5", _records(["h2", "water"], converged=[True, False]),
                shard_attrs())
    return d


def test_records_roundtrip(shard_dir):
    ds = ShardDataset(shard_dir, with_overlap=True)
    assert len(ds) == 3 and ds.excluded_unconverged == 1
    assert len(ShardDataset(shard_dir, exclude_unconverged=False)) == 4
    for i, name in enumerate(["water", "hf", "h2"]):
        rec, mol = ds[i], _mol(name)
        assert rec["Z"].dtype == np.int64 and rec["pos"].dtype == np.float64
        np.testing.assert_array_equal(rec["Z"], mol.atom_charges())
        np.testing.assert_allclose(rec["pos"], mol.atom_coords(unit="Angstrom"), atol=1e-12)
        h = mol.intor("int1e_kin") + mol.intor("int1e_nuc")
        np.testing.assert_array_equal(rec["fock"], rec["fock"].T)
        np.testing.assert_allclose(rec["fock"], h, rtol=1e-6, atol=1e-6)  # float32 storage
        np.testing.assert_allclose(rec["overlap"], mol.intor("int1e_ovlp"), atol=1e-14)
    assert [int(ds[i]["qm9_index"]) for i in range(3)] == [100, 101, 100]
    assert ds[-1]["energy"] == -1.5
    with pytest.raises(IndexError):
        ds[3]
    # picklable for DataLoader workers after handles were opened
    clone = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(clone[1]["fock"], ds[1]["fock"])


def test_find_shards(shard_dir, tmp_path):
    assert [p.name for p in find_shards(shard_dir)] == ["qm9_b3lyp_def2svp_000.h5",
                                                        "qm9_b3lyp_def2svp_001.h5"]
    assert len(find_shards(str(shard_dir / "*_001.h5"))) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no shard files"):
        find_shards(empty)
    with pytest.raises(FileNotFoundError, match="no shard files match"):
        find_shards(tmp_path / "nothing_*.h5")


def test_protocol_mismatch_refused(shard_dir, tmp_path):
    with pytest.raises(ValueError, match=r"qm9_b3lyp_def2svp_000\.h5 was labelled with "
                                         r"xc='b3lyp' but xc='pbe'"):
        ShardDataset(shard_dir, xc="pbe")
    with pytest.raises(ValueError, match="basis='def2-svp' but basis='def2-tzvp'"):
        ShardDataset(shard_dir, basis="def2-tzvp")
    assert len(ShardDataset(shard_dir, xc="B3LYP", basis="DEF2SVP")) == 3
    # one shard of another protocol among good ones is refused, naming that file
    odd = tmp_path / "mixed"
    write_shard(odd / "qm9_b3lyp_def2svp_000.h5", _records(["h2"]), shard_attrs())
    write_shard(odd / "qm9_b3lyp_def2svp_001.h5", _records(["h2"]), shard_attrs(xc="pbe0"))
    with pytest.raises(ValueError, match=r"_001\.h5 was labelled with xc='pbe0'"):
        ShardDataset(odd)


def test_hinit_cache_written_reused_rebuilt(shard_dir, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    real = hinit.minao_fock
    calls = []
    monkeypatch.setattr(hinit, "minao_fock", lambda *a, **k: (calls.append(1), real(*a, **k))[1])

    ds = ShardDataset(shard_dir, with_hinit=True, cache_dir=cache, grid_level=GRID)
    first = [ds[i]["hinit"] for i in range(len(ds))]
    assert len(calls) == 3
    side = sorted(p.name for p in cache.glob("*.hinit.h5"))
    digests = [ds.hinit_cache(k).identity()["source_digest"][:12] for k in range(2)]
    assert side == [f"qm9_b3lyp_def2svp_00{k}.{digests[k]}.b3lyp.def2-svp.grid1.hinit.h5"
                    for k in range(2)]
    np.testing.assert_allclose(first[1], real(_mol("hf"), grid_level=GRID), atol=1e-12)

    # a fresh dataset (fresh handles) reads the cache and never calls PySCF
    def no_pyscf(*a, **k):
        raise AssertionError("H_init recomputed although cached")
    monkeypatch.setattr(hinit, "minao_fock", no_pyscf)
    again = ShardDataset(shard_dir, with_hinit=True, cache_dir=cache, grid_level=GRID)
    for i in range(len(again)):
        np.testing.assert_array_equal(again[i]["hinit"], first[i])

    # the shard changes (same name, other geometry): its side file is rebuilt
    monkeypatch.setattr(hinit, "minao_fock", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    calls.clear()
    write_shard(shard_dir / "qm9_b3lyp_def2svp_000.h5", _records(["water", "hf"], shift=0.05),
                shard_attrs())
    moved = ShardDataset(shard_dir, with_hinit=True, cache_dir=cache, grid_level=GRID)
    np.testing.assert_allclose(moved[1]["hinit"], first[1], atol=1e-9)  # translation-invariant
    assert len(calls) == 1
    new_side = moved.hinit_cache(0).path  # the new geometry digest names a new side file
    assert new_side.name != side[0]
    with h5py.File(new_side) as f:
        assert sorted(f["hinit"]) == ["1"]

    # a side file of another protocol (tampered attribute) is refused and rebuilt
    for d in (ds, again, moved):
        d.close()
    with h5py.File(cache / side[1], "a") as f:
        f.attrs["xc"] = "pbe"
    calls.clear()
    fresh = ShardDataset(shard_dir, with_hinit=True, cache_dir=cache, grid_level=GRID)
    np.testing.assert_allclose(fresh[2]["hinit"], first[2], atol=1e-12)
    assert len(calls) == 1
    with h5py.File(cache / side[1]) as f:
        assert f.attrs["xc"] == "b3lyp"


def test_hinit_cache_survives_killed_commit(shard_dir, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    ds = ShardDataset(shard_dir, with_hinit=True, cache_dir=cache, grid_level=GRID)
    ds[0]
    real_replace = os.replace

    def killed(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        ds[1]
    monkeypatch.setattr(os, "replace", real_replace)
    assert ds.hinit_cache(0).cached() == {0}  # old file intact and readable
    assert precompute_hinit(ds, progress=False) == 2  # shard 0 entry 1, shard 1 entry 0
    assert ds.hinit_cache(0).cached() == {0, 1} and ds.hinit_cache(1).cached() == {0}
    assert not list(cache.glob("*.tmp*"))
    assert precompute_hinit(ds, progress=False) == 0

    # a corrupt side file (e.g. truncated by a full disk) is rebuilt, not fatal
    ds.close()
    side = ds.hinit_cache(1).path
    side.write_bytes(b"not an HDF5 file")
    fresh = ShardDataset(shard_dir, with_hinit=True, cache_dir=cache, grid_level=GRID)
    np.testing.assert_allclose(fresh[2]["hinit"], hinit.minao_fock(_mol("h2"), grid_level=GRID),
                               atol=1e-12)
    assert fresh.hinit_cache(1).cached() == {0}


def test_minao_fock_equals_independent_build():
    mol = _mol("water")
    dm = scf.hf.init_guess_by_minao(mol)  # [nao, nao], spin-summed
    grids = dft.gen_grid.Grids(mol)
    grids.level = GRID
    grids.build()
    ni = dft.numint.NumInt()
    _, _, vxc = ni.nr_rks(mol, grids, "b3lyp", dm)
    omega, alpha, hyb = ni.rsh_and_hybrid_coeff("b3lyp")
    assert omega == 0
    vj, vk = scf.hf.get_jk(mol, dm)
    ref = mol.intor("int1e_kin") + mol.intor("int1e_nuc") + vj - 0.5 * hyb * vk + vxc
    np.testing.assert_allclose(hinit.minao_fock(mol, grid_level=GRID), ref, atol=1e-10)
    assert hinit.protocol_ks(mol).grids.level == 3


def test_minao_fock_open_shell_and_charged():
    # odd electron count: closed-shell RKS Fock of the spin-summed minao density
    for kw in ({"spin": 1}, {"charge": -1, "spin": 0}, {"charge": 1, "spin": 2}):
        mol = gto.M(atom=GEOMS["water"][:2], basis="def2-svp", verbose=0, **kw)
        neutral = gto.M(atom=GEOMS["water"][:2], basis="def2-svp", verbose=0, spin=1)
        f = hinit.minao_fock(mol, grid_level=GRID)
        assert f.shape == (mol.nao, mol.nao) and np.all(np.isfinite(f))
        np.testing.assert_allclose(f, f.T, atol=1e-12)
        # MinAO is neutral atoms: H_init does not depend on charge or spin
        np.testing.assert_allclose(f, hinit.minao_fock(neutral, grid_level=GRID), atol=1e-12)
    with pytest.raises(ValueError, match="spherical"):
        hinit.protocol_ks(gto.M(atom=GEOMS["h2"], basis="def2-svp", cart=True, verbose=0))


def test_split_deterministic_disjoint_stable(tmp_path):
    h2 = _records(["h2"])[0]
    def shard(path, qs):
        write_shard(path, [dict(h2, qm9_index=q) for q in qs], shard_attrs())
    shard(tmp_path / "qm9_b3lyp_def2svp_000.h5", range(1, 1500))
    one = ShardDataset(tmp_path)
    tr, va, te = split_by_qm9_index(one)
    assert sorted(np.concatenate([tr, va, te]).tolist()) == list(range(len(one)))
    assert not (set(tr) & set(va) or set(tr) & set(te) or set(va) & set(te))
    for part, frac in zip((tr, va, te), (0.8, 0.1, 0.1)):
        assert abs(len(part) / len(one) - frac) < 0.04
    again = split_by_qm9_index(one)
    assert all(np.array_equal(a, b) for a, b in zip((tr, va, te), again))
    other_seed = split_by_qm9_index(one, seed=1)
    assert not np.array_equal(te, other_seed[2])

    # adding a shard never moves a molecule
    shard(tmp_path / "qm9_b3lyp_def2svp_001.h5", range(1500, 1700))
    two = ShardDataset(tmp_path)
    tr2, va2, te2 = split_by_qm9_index(two)
    for before, after in zip((tr, va, te), (tr2, va2, te2)):
        assert set(one.qm9_index[before]) == set(two.qm9_index[after]) & set(range(1, 1500))
    with pytest.raises(ValueError, match="fractions"):
        split_by_qm9_index(one, fractions=(0.5, 0.5, 0.5))

    # split_indices: one split by name, limited, or every record
    assert split_indices(one, "val") == va.tolist()
    assert split_indices(one, "test", limit=5) == te[:5].tolist()
    assert split_indices(one, "test", seed=1) == other_seed[2].tolist()
    assert split_indices(one, "all") == list(range(len(one)))
    with pytest.raises(ValueError, match="unknown split 'holdout'"):
        split_indices(one, "holdout")


class _FakeQM9Table:
    """The slice of qm9pack's pandas table that molecules_from_qm9 reads."""

    class _Rows:
        def __init__(self, rows):
            self.rows = rows

        def __getitem__(self, r):
            return self.rows[r]

    def __init__(self, indices):
        self.index = np.asarray(indices, np.int64)
        self.iloc = self._Rows([{"Index": q, "SMILES": "[H][H]", "Elements": "['H','H']",
                                 "XYZ_Ang": "[[0.0,0.0,0.0],[0.0,0.0,0.741]]"}
                                for q in self.index])

    def __getitem__(self, column):
        assert column == "Index"
        return self

    def to_numpy(self, dtype):
        return self.index.astype(dtype)


def test_label_qm9_split_follows_the_split_rule(tmp_path, monkeypatch):
    """``qhflow label --qm9-split test`` picks exactly the molecules the split puts in test."""
    from pyscf_qhflow.data import label
    monkeypatch.setattr(label, "_qm9pack_table", lambda: _FakeQM9Table(range(1, 600)))
    specs = label.molecules_from_qm9(1, None, split="test", exclude=[3, 5])
    chosen = {s.qm9_index for s in specs}
    assert chosen and not chosen & {3, 5} and all(q % 50 for q in chosen)

    # label them (as the labeller would) and split: every one lands in test
    h2 = _records(["h2"])[0]
    write_shard(tmp_path / "qm9_b3lyp_def2svp_000.h5",
                [dict(h2, qm9_index=q) for q in range(1, 600)], shard_attrs())
    ds = ShardDataset(tmp_path)
    test_qm9 = set(ds.qm9_index[split_by_qm9_index(ds)[2]].tolist())
    assert chosen == {q for q in test_qm9 if q % 50 and q not in (3, 5)}
    assert specs[0].atoms()[0].tolist() == [1, 1]
    from pyscf_qhflow.cli.label import _labelled_qm9
    assert _labelled_qm9([str(tmp_path)]) == set(range(1, 600))
    with pytest.raises(ValueError, match="split must be one of"):
        label.molecules_from_qm9(1, None, split="holdout")
