"""What ``run_scf`` charges each guess: Fock builds, the guess's own cost, the per-cycle trace."""
from __future__ import annotations

import json

import pytest
from pyscf import scf

from pyscf_qhflow.benchmark import bench_scf_molecule, summarize_scf_cost
from pyscf_qhflow.checkpoint import load_model, save_checkpoint
from pyscf_qhflow.guess.predictor import Predictor
from pyscf_qhflow.model import QHFlowModel
from pyscf_qhflow.scfrun import (count_fock_builds, make_scf, run_scf, stop_at_tol,
                                 stop_within, tolerance_columns)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    save_checkpoint(path, QHFlowModel.from_config("tiny", seed=0), {"data": "untrained"})
    return Predictor(load_model(path))


def test_minao_builds_are_cycles_plus_first_and_conv_check(water):
    mf = make_scf(water, xc="hf", conv_tol=1e-10)
    row = run_scf(mf, "minao")
    assert row["converged"] and row["guess_fock_builds"] == 0
    # the guess density's build, one per cycle, PySCF's final conv_check build
    assert row["fock_builds"] == row["cycles"] + 2
    trace = row["trace"]
    assert [p["cycle"] for p in trace] == list(range(row["cycles"] + 1))
    assert [p["fock_builds"] for p in trace] == list(range(1, row["cycles"] + 2))
    assert trace[-1]["e_tot"] == pytest.approx(row["e_tot"], abs=1e-9)
    assert all(b["t_s"] >= a["t_s"] for a, b in zip(trace, trace[1:]))
    assert row["wall_s"] == pytest.approx(row["guess_s"] + row["scf_s"])


def test_qhflow_is_charged_its_h_init_build(water, tiny_model):
    mf = make_scf(water, xc="hf", conv_tol=1e-10)
    mf.qhflow_model = tiny_model
    row = run_scf(mf, "qhflow")
    assert row["qhflow_used"] and row["converged"]
    assert row["guess_fock_builds"] == 1  # H_init: the Fock matrix of the MinAO density
    assert row["fock_builds"] == row["cycles"] + 3
    assert row["trace"][0]["fock_builds"] == 2 and row["guess_s"] > 0


def test_counting_restores_pyscf_and_ignores_other_molecules(water, methane):
    original = scf.hf.SCF.get_veff
    with count_fock_builds(water) as count:
        scf.RHF(methane).get_veff(methane, scf.RHF(methane).get_init_guess())
        assert count["n"] == 0
        mf = scf.RHF(water)
        mf.get_veff(water, mf.get_init_guess())
        assert count["n"] == 1
    assert scf.hf.SCF.get_veff is original


def test_looser_tolerances_read_off_the_trace_match_a_real_run(water):
    tight = run_scf(make_scf(water, xc="hf", conv_tol=1e-10), "minao")
    loose = run_scf(make_scf(water, xc="hf", conv_tol=1e-7), "minao")
    stop = stop_at_tol(tight, 1e-7)
    assert stop["cycles"] == loose["cycles"] and stop["fock_builds"] == loose["fock_builds"]
    cols = tolerance_columns(tight)
    assert cols["cycles_1e-10"] == tight["cycles"]
    assert cols["cycles_1mev"] <= cols["cycles_1e-9"] <= cols["cycles_1e-10"]
    within = stop_within(tight)
    assert all(abs(p["e_tot"] - tight["e_tot"]) * 27.211386 < 1e-3
               for p in tight["trace"] if p["cycle"] >= within["cycles"])
    # a looser run cannot say where a tighter tolerance would stop
    assert tolerance_columns(loose)["cycles_1e-10"] is None


def test_cost_table_and_convergence_plot_from_bench_rows(water, tiny_model, tmp_path):
    rows = bench_scf_molecule("water", water, ("qhflow", "minao"), tiny_model, xc="hf",
                              include_converged=False)
    assert all(isinstance(json.loads(r["trace"]), list) for r in rows)
    table = summarize_scf_cost(rows)
    for rule in ("1e-10", "1e-9", "1mev"):
        assert f"| {rule} | minao | 1 |" in table and f"| {rule} | qhflow | 1 |" in table
    assert "| 1e-10 | minao | 1 | " in table and "100.0%" in table
    pytest.importorskip("matplotlib", reason="plots need the optional 'bench' extra")
    from pyscf_qhflow.benchmark import plot_convergence
    assert plot_convergence(rows, tmp_path).stat().st_size > 1000


def test_incore_rule_does_not_depend_on_the_process_history(water, monkeypatch):
    """A process that grew (earlier molecules) must not turn one guess's SCF direct."""
    from pyscf import lib
    monkeypatch.setattr(lib, "current_memory", lambda: (1e9, 1e9))  # MB: 'memory is full'
    mf = make_scf(water, xc="hf", conv_tol=1e-10)
    assert not mf._is_mem_enough()  # PySCF's own rule would now run direct
    row = run_scf(mf, "minao")
    assert row["incore"] and mf._eri is not None


def test_guess_in_another_basis_builds_h_init_once(water):
    """A def2-SVP model seeding a def2-SVPD SCF: one H_init build (in the model's basis)."""
    from pyscf_qhflow.guess.hook import resolve_model
    from conftest import example_mol
    mol = example_mol("water", basis="def2-svpd")
    mf = make_scf(mol, xc="b3lyp", grid_level=1, conv_tol=1e-8)
    mf.qhflow_model = resolve_model(model="default")  # calibrated: draws prior samples
    row = run_scf(mf, "qhflow")
    assert row["qhflow_used"] and mf.qhflow_info["projected_from"] == "def2-svp"
    assert mf.qhflow_info["confidence"] is not None
    assert row["guess_fock_builds"] == 1


def test_a_finished_run_frees_its_scf_without_the_cyclic_gc(water, tiny_model):
    """run_scf must leave no reference cycle through mf: a benchmark of many molecules
    kept every SCF and its in-core ERIs until a rare full GC and ran out of memory."""
    import gc
    import weakref
    gc.disable()
    try:
        for guess in ("minao", "qhflow"):
            mf = make_scf(water, xc="hf", conv_tol=1e-8)
            mf.qhflow_model = tiny_model
            own_class = type(mf)
            run_scf(mf, guess)
            assert type(mf) is own_class  # the timing subclass is gone again
            alive = weakref.ref(mf)
            del mf
            assert alive() is None, guess
    finally:
        gc.enable()
