"""``qhflow scf`` on many molecules: a worker pool, a resumable CSV, a summary, clear errors."""
from __future__ import annotations

import csv

import pytest

from pyscf_qhflow.cli.main import main

from conftest import EXAMPLES


def test_batch_scf_with_two_workers_resumes_from_its_csv(tiny_checkpoint, tmp_path, capsys):
    results = tmp_path / "screen.csv"
    argv = ["scf", str(EXAMPLES / "water.xyz"), str(EXAMPLES / "methane.xyz"), "--xc", "hf",
            "--compare", "minao", "--jobs", "2", "--csv", str(results),
            "--model", str(tiny_checkpoint)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "2 molecules; results in" in out and "| qhflow | 2 |" in out
    rows = list(csv.DictReader(results.open()))
    assert sorted((r["molecule"], r["guess"]) for r in rows) == [
        ("methane", "minao"), ("methane", "qhflow"), ("water", "minao"), ("water", "qhflow")]
    for r in rows:
        assert r["converged"] == "True" and abs(float(r["delta_e_vs_minao"])) < 1e-8
        if r["guess"] == "qhflow":
            assert r["qhflow_used"] == "True" and r["guess_fock_builds"] == "1"
    assert main(argv) == 0  # everything is in the CSV already: nothing runs again
    assert len(list(csv.DictReader(results.open()))) == 4


def test_scf_without_comparison_runs_qhflow_only(tiny_checkpoint, tmp_path, capsys):
    results = tmp_path / "only.csv"
    assert main(["scf", str(EXAMPLES / "water.xyz"), "--xc", "hf", "--compare",
                 "--csv", str(results), "--model", str(tiny_checkpoint),
                 "--no-confidence"]) == 0
    assert [r["guess"] for r in csv.DictReader(results.open())] == ["qhflow"]
    assert "qhflow" in capsys.readouterr().out


def test_scf_reports_bad_inputs(tmp_path, capsys):
    assert main(["scf", str(tmp_path / "missing.xyz")]) == 2
    assert "no such .xyz file" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    assert main(["scf", str(tmp_path / "empty")]) == 2
    assert "no .xyz files in directory" in capsys.readouterr().out
    assert main(["scf", str(EXAMPLES / "water.xyz"), str(EXAMPLES / "water.xyz")]) == 2
    assert "comes from both" in capsys.readouterr().out


def test_cli_options_do_not_leak_into_the_process(tiny_checkpoint, tmp_path):
    from pyscf_qhflow import config
    assert main(["scf", str(EXAMPLES / "water.xyz"), "--xc", "hf", "--compare",
                 "--csv", str(tmp_path / "r.csv"), "--model", str(tiny_checkpoint),
                 "--no-confidence"]) == 0
    assert config.guess_confidence is True
    with pytest.raises(ValueError, match="unknown"):
        with config.temporarily(no_such_option=1):
            pass
