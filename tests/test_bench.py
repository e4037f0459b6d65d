"""The benchmark commands end to end on two tiny molecules (untrained tiny model)."""
from __future__ import annotations

import csv

import numpy as np
import pytest

from pyscf_qhflow.benchmark import csv_appender, read_rows
from pyscf_qhflow.cli.main import main
from pyscf_qhflow.data.label import label_molecule, shard_attrs, write_shard

from conftest import EXAMPLES


def test_bench_scf_end_to_end(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "scf"
    argv = ["bench", "scf", str(EXAMPLES / "water.xyz"), str(EXAMPLES / "methane.xyz"),
            "--guesses", "qhflow", "minao", "1e", "--grid-level", "1",
            "--model", str(tiny_checkpoint), "--out", str(out), "--no-plots"]
    assert main(argv) == 0
    rows = list(csv.DictReader((out / "scf.csv").open()))
    # minao, qhflow, 1e and the converged-density limit for each molecule
    assert sorted({r["guess"] for r in rows}) == ["1e", "converged", "minao", "qhflow"]
    assert len(rows) == 8
    for r in rows:
        assert r["converged"] == "True"
        assert abs(float(r["delta_e_vs_minao"])) < 1e-8
        if r["guess"] == "qhflow":
            assert r["qhflow_used"] == "True" and float(r["inference_s"]) > 0
        if r["guess"] == "converged":
            assert int(r["cycles"]) <= 2
    table = (out / "scf_summary.md").read_text()
    assert "| qhflow | 2 |" in table and "| minao | 2 |" in table
    # resumable: a second run computes nothing new
    assert main(argv) == 0
    assert len(list(csv.DictReader((out / "scf.csv").open()))) == 8


def test_bench_plots(tiny_checkpoint, tmp_path):
    pytest.importorskip("matplotlib", reason="plots need the optional 'bench' extra")
    from pyscf_qhflow.benchmark import plot_scf
    rows = [{"molecule": m, "natm": n, "guess": g, "cycles": c}
            for m, n in (("a", 3), ("b", 5)) for g, c in (("minao", 10), ("qhflow", 6))]
    paths = plot_scf(rows, tmp_path)
    assert all(p.stat().st_size > 1000 for p in paths)


def test_bench_accuracy_end_to_end(tiny_checkpoint, tmp_path):
    # two shard directories (shared data + own labels), as --shards A B
    dirs = [tmp_path / "shared", tmp_path / "own"]
    for d, name in zip(dirs, ("water", "methane")):
        d.mkdir()
        lab = label_molecule(EXAMPLES / f"{name}.xyz", grid_level=1)
        write_shard(d / "qm9_b3lyp_def2svp_000.h5", [{**lab, "qm9_index": -1}],
                    shard_attrs(grid_level=1))
    out = tmp_path / "acc"
    assert main(["bench", "accuracy", "--shards", *map(str, dirs), "--split", "all",
                 "--model", str(tiny_checkpoint), "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "accuracy.csv").open()))
    assert {r["source"] for r in rows} == {"qhflow", "hinit"} and len(rows) == 4
    for r in rows:
        assert 0 < float(r["h_mae_uha"]) < 1e5
        assert 0 < float(r["occ_cosine"]) <= 1 + 1e-9
    assert "| hinit | 2 |" in (out / "accuracy_summary.md").read_text()


def test_tune_damping_and_gap_guard_end_to_end(tiny_checkpoint, tmp_path, capsys):
    """qhflow tune scores every tau on one raw residual and writes the choice beside the
    weights (tensors unchanged); the gap tuner reports label and prediction ratios."""
    import shutil

    from pyscf_qhflow.checkpoint import read_checkpoint
    shards = tmp_path / "shards"
    shards.mkdir()
    labels = [{**label_molecule(EXAMPLES / f"{n}.xyz", grid_level=1, with_hinit=True),
               "qm9_index": -1} for n in ("water", "methane")]
    write_shard(shards / "qm9_b3lyp_def2svp_000.h5", labels, shard_attrs(grid_level=1))
    ckpt = tmp_path / "tiny.pt"
    shutil.copy(tiny_checkpoint, ckpt)
    before = read_checkpoint(ckpt)
    out = tmp_path / "damping"
    assert main(["tune", "damping", "--shards", str(shards), "--split", "all",
                 "--taus", "0", "0.01", "0.1", "--model", str(ckpt), "--out", str(out),
                 "--write", str(ckpt)]) == 0
    rows = list(csv.DictReader((out / "damping.csv").open()))
    assert len(rows) == 2 * 4  # three taus and the H_init row per molecule
    by_tau = {}
    for r in rows:
        by_tau.setdefault(r["tau"], []).append(float(r["density_err"]))
    best = min((t for t in by_tau if t != "hinit"), key=lambda t: np.mean(by_tau[t]))
    after = read_checkpoint(ckpt)
    assert after["config"]["overlap_damping"] == float(best)
    assert after["card"]["sha256"] == before["card"]["sha256"]
    out = tmp_path / "gap"
    assert main(["tune", "gap-guard", "--shards", str(shards), "--splits", "train", "val",
                 "test", "--xyz", str(EXAMPLES / "ethanol.xyz"), "--model", str(ckpt),
                 "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "gap_guard.csv").open()))
    assert [r["molecule"] for r in rows][-1] == "ethanol" and rows[-1]["ratio_label"] == ""
    assert all(float(r["gap_hinit_mha"]) > 0 for r in rows)
    assert "Molecules without labels" in (out / "gap_guard.md").read_text()


def test_fock_metrics_of_the_reference_are_zero(water):
    from pyscf import scf

    from pyscf_qhflow.benchmark import fock_metrics
    mf = scf.RHF(water)
    mf.kernel()
    f = mf.get_fock()
    m = fock_metrics(f, f, mf.get_ovlp(), water.nelectron // 2)
    assert m["h_mae_uha"] == 0 and m["gap_err_mha"] < 1e-9
    assert abs(m["occ_cosine"] - 1) < 1e-10
    shifted = fock_metrics(f + 1e-3 * mf.get_ovlp(), f, mf.get_ovlp(), water.nelectron // 2)
    assert np.isclose(shifted["occ_eps_mae_mha"], 1.0)  # F + cS shifts every level by c
    assert shifted["gap_err_mha"] < 1e-9
    assert m["density_err"] < 1e-10 and shifted["density_err"] < 1e-8


def test_density_error_counts_a_swapped_orbital(water):
    """Lifting the HOMO above the LUMO swaps one doubly occupied orbital: ||dD|| = 2 sqrt(2)."""
    from pyscf import scf

    from pyscf_qhflow.benchmark import fock_metrics
    mf = scf.RHF(water)
    mf.kernel()
    f, s = mf.get_fock(), mf.get_ovlp()
    homo = mf.mo_coeff[:, water.nelectron // 2 - 1]
    lifted = f + 5.0 * s @ np.outer(homo, homo) @ s  # the HOMO's energy + 5 Ha
    m = fock_metrics(lifted, f, s, water.nelectron // 2)
    assert np.isclose(m["density_err"], 2 * np.sqrt(2), atol=1e-8)


def test_bench_scf_cation_without_limit(tiny_checkpoint, tmp_path):
    out = tmp_path / "cation"
    argv = ["bench", "scf", str(EXAMPLES / "water.xyz"), "--guesses", "qhflow", "minao",
            "--charge", "1", "--no-limit", "--grid-level", "1", "--num-steps", "0",
            "--model", str(tiny_checkpoint), "--out", str(out), "--no-plots"]
    assert main(argv) == 0
    rows = list(csv.DictReader((out / "scf.csv").open()))
    assert sorted(r["guess"] for r in rows) == ["minao", "qhflow"]  # no 'converged' row
    for r in rows:
        assert r["converged"] == "True" and abs(float(r["delta_e_vs_minao"])) < 1e-8
    assert next(r for r in rows if r["guess"] == "qhflow")["qhflow_used"] == "True"


def test_bench_scf_adds_a_guess_to_an_old_run_without_rerunning_it(tiny_checkpoint, tmp_path):
    """Resume per (molecule, guess): a later qhflow run reuses the stored minao row."""
    out = tmp_path / "later"
    common = [str(EXAMPLES / "water.xyz"), "--grid-level", "1", "--num-steps", "0",
              "--model", str(tiny_checkpoint), "--out", str(out), "--no-plots"]
    assert main(["bench", "scf", *common, "--guesses", "minao"]) == 0
    first = list(csv.DictReader((out / "scf.csv").open()))
    assert [r["guess"] for r in first] == ["minao", "converged"]
    assert main(["bench", "scf", *common, "--guesses", "qhflow", "minao"]) == 0
    rows = list(csv.DictReader((out / "scf.csv").open()))
    assert rows[:2] == first and [r["guess"] for r in rows[2:]] == ["qhflow"]
    qh = rows[2]
    assert qh["qhflow_used"] == "True" and qh["qhflow_tau"] != ""
    assert float(qh["delta_e_vs_minao"]) == pytest.approx(
        float(qh["e_tot"]) - float(first[0]["e_tot"]), abs=1e-12)
    assert abs(float(qh["delta_e_vs_minao"])) < 1e-8
    assert "| qhflow | 1 |" in (out / "scf_summary.md").read_text()
    # one table from several runs; a run given twice is refused
    merged = tmp_path / "merged"
    assert main(["bench", "summarize", str(out / "scf.csv"), "--out", str(merged)]) == 0
    assert (merged / "scf_summary.md").read_text() == (out / "scf_summary.md").read_text()
    assert main(["bench", "summarize", str(out / "scf.csv"), str(out / "scf.csv")]) == 2
    assert main(["bench", "summarize", str(out / "scf.csv"), "--molecules", "water",
                 "--out", str(merged / "only")]) == 0
    assert "| qhflow | 1 |" in (merged / "only" / "scf_summary.md").read_text()
    assert main(["bench", "summarize", str(out / "scf.csv"), "--molecules", "benzene",
                 "--out", str(merged / "none")]) == 0
    assert "| qhflow |" not in (merged / "none" / "scf_summary.md").read_text()


def test_bench_scf_resumes_a_run_stopped_before_its_first_row(tiny_checkpoint, tmp_path):
    """An empty CSV (killed during the first molecule) starts afresh instead of failing."""
    out = tmp_path / "stopped"
    out.mkdir()
    (out / "scf.csv").touch()
    argv = ["bench", "scf", str(EXAMPLES / "water.xyz"), "--guesses", "minao", "--no-limit",
            "--grid-level", "1", "--model", str(tiny_checkpoint), "--out", str(out),
            "--no-plots"]
    assert main(argv) == 0
    rows = list(csv.DictReader((out / "scf.csv").open()))
    assert [(r["molecule"], r["guess"], r["converged"]) for r in rows] == [
        ("water", "minao", "True")]


def test_csv_appender_keeps_an_older_files_columns(tmp_path):
    path = tmp_path / "rows.csv"
    with csv_appender(path, ["molecule", "cycles"]) as (f, writer):
        assert path.read_text().splitlines() == ["molecule,cycles"]  # header on disk at once
        writer.writerow({"molecule": "water", "cycles": 9})
    # a newer writer with an extra column appends in the file's own layout
    with csv_appender(path, ["molecule", "cycles", "wall_s"]) as (f, writer):
        writer.writerow({"molecule": "methane", "cycles": 8, "wall_s": 1.5})
    assert read_rows(path) == [{"molecule": "water", "cycles": "9"},
                               {"molecule": "methane", "cycles": "8"}]
    assert read_rows(tmp_path / "missing.csv") == []


def test_bench_scf_measures_the_packages_hinit_grid_unless_told(monkeypatch, tmp_path):
    """Without --hinit-grid-level the table is for config.hinit_grid_level (what users
    get); with it, for that level, and the package's option is restored after."""
    import argparse

    from pyscf_qhflow import config
    from pyscf_qhflow.cli import bench
    seen = []
    monkeypatch.setattr(bench, "_bench_scf",
                        lambda args, model, out: seen.append(config.hinit_grid_level) or 0)
    default = config.hinit_grid_level
    for level in (None, 3):
        args = argparse.Namespace(hinit_grid_level=level, no_confidence=False)
        assert bench._run_scf(args, None, tmp_path) == 0
    assert seen == [default, 3] and config.hinit_grid_level == default
