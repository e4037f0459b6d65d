"""Run one SCF from a named initial guess and record what it cost.

Shared by ``qhflow scf`` and the benchmark harness, so both measure the same
thing: a fresh SCF object per guess (PySCF would otherwise reuse an existing
``mf.mo_coeff``), identical settings, and

* ``fock_builds``: Fock builds of the whole molecule (calls to ``get_veff`` of
  any SCF object on this molecule, in any basis) from the start of the guess
  to the end of ``kernel``, PySCF's final ``conv_check`` build included.  The
  guess's own builds are in it and also apart as ``guess_fock_builds``: H_init
  (the MinAO-density Fock matrix) for ``'qhflow'``, none for PySCF's guesses
  (their atomic SCFs for 'atom'/'huckel' are atoms, not the molecule, and are
  not counted);
* ``wall_s = guess_s + scf_s``: ``guess_s`` is ``mf.get_init_guess`` (for
  'qhflow': H_init, and the grids and in-core integrals it builds and the SCF
  reuses, the network and the density), ``scf_s`` the rest of ``kernel``.
  The process-level one-off cost (importing torch/e3nn, loading the model) is
  in neither: :func:`load_predictor` measures it once per process;
* a trace of every cycle (``mf.callback``): energy, orbital-gradient norm,
  Fock builds so far and time, from which :func:`stop_at_tol` and
  :func:`stop_within` give the cost to a looser tolerance without another run.
"""
from __future__ import annotations

import math
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from pyscf import dft, gto, scf

from .errors import check_geometry
from .units import HARTREE_TO_EV

__all__ = ["PYSCF_GUESSES", "TOLERANCES", "load_molecule", "make_scf", "run_scf",
           "incore_integrals", "xyz_files_in", "build_molecule",
           "count_fock_builds", "stop_at_tol", "stop_within", "tolerance_columns",
           "load_predictor"]

# every built-in guess PySCF offers for molecules, in the order reported
PYSCF_GUESSES = ("minao", "atom", "huckel", "sap", "1e")

# The in-core rule of every run, from the molecule alone: PySCF keeps the two-electron
# integrals in core when nao^4/1e6 MB plus the process's *current* memory fits in
# 95% of max_memory, so in one long process (a benchmark, a screening run) the
# same molecule ran in core or direct by the history of what ran before it (the
# process's memory grows and is not given back), up to 3x per cycle either way.
# run_scf charges the integrals as if the process held this much and nothing else.
INCORE_BASELINE_MB = 1000.0

# the three stopping rules reported: (column suffix, conv_tol or None, energy window in eV)
SCREEN_EV = 1e-3  # 1 meV: what screening needs
TOLERANCES = (("1e-10", 1e-10, None), ("1e-9", 1e-9, None), ("1mev", None, SCREEN_EV))


def load_molecule(path: str | Path, basis: str = "def2-svp", charge: int = 0,
                  spin: int | None = None, verbose: int = 0) -> gto.Mole:
    """Build a Mole from an .xyz file (Angstrom), checking the geometry first."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such geometry file: {path}")
    lines = path.read_text().splitlines()
    try:
        natm = int(lines[0].split()[0])
        rows = [ln.split() for ln in lines[2:2 + natm]]
        symbols = [r[0] for r in rows]
        coords = np.array([[float(x) for x in r[1:4]] for r in rows])
    except (IndexError, ValueError) as err:
        raise ValueError(f"{path}: not a valid .xyz file ({err})") from None
    if len(rows) != natm:
        raise ValueError(f"{path}: header says {natm} atoms, found {len(rows)}")
    return build_molecule(symbols, coords, basis, charge, spin, verbose)


def xyz_files_in(directory: str | Path) -> list[Path]:
    """The .xyz files of ``directory``, sorted; ``FileNotFoundError`` when it has none."""
    found = sorted(Path(directory).glob("*.xyz"))
    if not found:
        raise FileNotFoundError(f"no .xyz files in directory {directory}")
    return found


def build_molecule(symbols, coords, basis: str = "def2-svp", charge: int = 0,
                   spin: int | None = None, verbose: int = 0) -> gto.Mole:
    """A built Mole from element symbols and coordinates (Angstrom), geometry checked.

    ``spin`` (2S) defaults to 0 or 1 by electron count.
    """
    coords = np.asarray(coords, dtype=float).reshape(-1, 3)
    check_geometry(coords)
    mol = gto.Mole(atom=list(zip(symbols, coords.tolist())), basis=basis, charge=charge,
                   unit="Angstrom", verbose=verbose)
    if spin is not None:
        mol.spin = spin
    else:
        mol.spin = (sum(gto.charge(s) for s in symbols) - charge) % 2
    return mol.build()


def make_scf(mol: gto.Mole, xc: str | None = "b3lyp", grid_level: int = 3,
             conv_tol: float = 1e-10, max_cycle: int = 100, density_fit: bool = False):
    """A fresh SCF object: (R|U)KS for a functional, (R|U)HF for ``xc`` None or 'hf'."""
    open_shell = mol.spin != 0
    if xc is None or xc.lower() == "hf":
        mf = scf.UHF(mol) if open_shell else scf.RHF(mol)
    else:
        mf = dft.UKS(mol, xc=xc) if open_shell else dft.RKS(mol, xc=xc)
        mf.grids.level = grid_level
    if density_fit:
        mf = mf.density_fit()
    mf.conv_tol = conv_tol
    mf.max_cycle = max_cycle
    return mf


def _same_molecule(a: gto.Mole, b: gto.Mole) -> bool:
    return a.natm == b.natm and np.array_equal(a.atom_charges(), b.atom_charges())


@contextmanager
def count_fock_builds(mol: gto.Mole):
    """Count Fock builds of ``mol`` by any SCF object while the block runs.

    Every ``get_veff`` defined on PySCF's SCF classes is wrapped for the
    duration (and restored after): an outermost call on an object whose
    molecule has ``mol``'s atoms counts once (nested calls, e.g. a subclass
    calling its parent's, do not count again; atomic SCFs of the 'atom' and
    'huckel' guesses are other molecules).  Yields a dict whose ``'n'`` is the
    count so far and ``'t_last'`` the ``perf_counter`` at the end of the last
    counted build.
    """
    from pyscf.dft import rks, roks, uks
    from pyscf.scf import ghf, hf, rohf, uhf
    state = {"n": 0, "t_last": None, "depth": 0}
    classes = {c for m in (hf, uhf, rohf, ghf, rks, uks, roks)
               for c in vars(m).values()
               if isinstance(c, type) and "get_veff" in vars(c)}
    originals = {c: vars(c)["get_veff"] for c in classes}

    def wrap(original):
        def get_veff(self, *args, **kwargs):
            state["depth"] += 1
            try:
                return original(self, *args, **kwargs)
            finally:
                state["depth"] -= 1
                if state["depth"] == 0 and _same_molecule(self.mol, mol):
                    state["n"] += 1
                    state["t_last"] = time.perf_counter()
        get_veff.__doc__ = original.__doc__
        return get_veff

    for c, original in originals.items():
        setattr(c, "get_veff", wrap(original))
    try:
        yield state
    finally:
        for c, original in originals.items():
            setattr(c, "get_veff", original)


def incore_integrals(mol: gto.Mole, max_memory_mb: float) -> bool:
    """Whether ``run_scf`` keeps ``mol``'s integrals in core: PySCF's rule with a fixed
    process size (:data:`INCORE_BASELINE_MB`) instead of the current one."""
    return mol.nao_nr() ** 4 / 1e6 + INCORE_BASELINE_MB < 0.95 * max_memory_mb


def run_scf(mf, guess) -> dict:
    """Run ``mf.kernel()`` from ``guess`` (a PySCF key, 'qhflow', or a density matrix).

    Returns cycles, Fock builds (guess included; see the module docstring),
    wall seconds split into guess and SCF, energy (Hartree), convergence, the
    per-cycle ``trace`` (list of dicts: cycle, e_tot, delta_e, norm_gorb,
    fock_builds, t_s since the start; cycle 0 is the guess density's energy),
    ``conv_check_s`` (the final conv_check cycle), ``incore`` (the
    integrals kept in core, by :func:`incore_integrals` so that every guess
    and every molecule of a long run decides alike), and for 'qhflow' whether
    the model was used.
    """
    label = guess if isinstance(guess, str) else "dm"
    mf.init_guess = guess if isinstance(guess, str) else "minao"
    clock = {"guess_s": 0.0, "guess_builds": 0, "guess_done": not isinstance(guess, str)}
    trace: list[dict] = []
    user_callback, own_class = mf.callback, mf.__class__
    # mf's bound methods, held only during the run: the wrappers below live in a
    # class of their own whose reference cycle only the cyclic GC frees, and a
    # strong reference from it to mf kept every SCF (with its in-core ERIs, 1 GB
    # for a QM9 molecule) alive until then: a long benchmark ran out of memory
    bound = {"get_init_guess": mf.get_init_guess, "energy_tot": mf.energy_tot}

    def timed_get_init_guess(*args, **kwargs):
        t = time.perf_counter()
        try:
            return bound["get_init_guess"](*args, **kwargs)
        finally:
            clock.update(guess_s=time.perf_counter() - t, guess_builds=counter["n"],
                         guess_done=True)

    def marked_energy_tot(*args, **kwargs):
        # kernel's first energy after the guess follows the first build: cycle 0
        if clock["guess_done"] and "init_t" not in clock:
            clock.update(init_t=counter["t_last"] or time.perf_counter(),
                         init_builds=counter["n"])
        return bound["energy_tot"](*args, **kwargs)

    def record(envs):
        if not trace:  # cycle 0: the guess density's energy, after the first build
            trace.append({"cycle": 0, "e_tot": float(envs["last_hf_e"]), "delta_e": None,
                          "norm_gorb": None, "fock_builds": clock["init_builds"],
                          "t_s": clock["init_t"] - t0})
        trace.append({"cycle": int(envs["cycle"]) + 1, "e_tot": float(envs["e_tot"]),
                      "delta_e": float(envs["e_tot"] - envs["last_hf_e"]),
                      "norm_gorb": float(envs["norm_gorb"]), "fock_builds": counter["n"],
                      "t_s": time.perf_counter() - t0})
        if callable(user_callback):
            user_callback(envs)

    # instance attributes would trip PySCF's sanity check; a thin subclass does not
    incore = incore_integrals(mf.mol, mf.max_memory)
    mf.__class__ = type(mf.__class__.__name__, (mf.__class__,),
                        {"get_init_guess": staticmethod(timed_get_init_guess),
                         "energy_tot": staticmethod(marked_energy_tot),
                         "_is_mem_enough": lambda self: incore})
    mf.callback = record
    try:
        with count_fock_builds(mf.mol) as counter:
            t0 = time.perf_counter()
            e_tot = mf.kernel(dm0=None if isinstance(guess, str) else guess)
            wall = time.perf_counter() - t0
            builds = counter["n"]
    finally:
        mf.callback, mf.__class__ = user_callback, own_class
        bound.clear()
    info = getattr(mf, "qhflow_info", None) or {}
    last_t = trace[-1]["t_s"] if trace else wall
    return {"guess": label, "cycles": int(mf.cycles), "fock_builds": builds,
            "guess_fock_builds": clock["guess_builds"],
            "wall_s": wall, "guess_s": clock["guess_s"], "scf_s": wall - clock["guess_s"],
            "e_tot": float(e_tot), "converged": bool(mf.converged),
            "conv_tol": float(mf.conv_tol), "incore": incore,
            "qhflow_used": info.get("used") if label == "qhflow" else None,
            "inference_s": info.get("inference_s") if label == "qhflow" else None,
            # the overlap damping the gap guard settled on (pyscf_qhflow.gap_guard)
            "qhflow_tau": ((info.get("gap_guard") or {}).get("tau")
                           if label == "qhflow" else None),
            "trace": trace, "conv_check_s": wall - last_t}


def stop_at_tol(row: dict, conv_tol: float) -> dict | None:
    """Where a run with ``conv_tol`` would stop, from the trace of a run at a tolerance <= it.

    PySCF's rule (``pyscf.scf.hf.kernel``): the first cycle with
    ``|dE| < conv_tol`` and ``|g| < sqrt(conv_tol)``, then one more build (the
    final ``conv_check`` cycle).  Returns cycles (``mf.cycles`` of that run),
    Fock builds (``conv_check`` included, as in ``run_scf``) and wall seconds
    (to that cycle plus the measured ``conv_check`` cycle of the traced run);
    ``None`` when the trace never meets the rule (a looser traced run, or not
    converged).
    """
    grad_tol = math.sqrt(conv_tol)
    for point in row["trace"][1:]:
        if abs(point["delta_e"]) < conv_tol and point["norm_gorb"] < grad_tol:
            return {"cycles": point["cycle"], "fock_builds": point["fock_builds"] + 1,
                    "wall_s": point["t_s"] + row["conv_check_s"]}
    return None


def stop_within(row: dict, window_ev: float = SCREEN_EV) -> dict | None:
    """The first cycle from which ``|E - E_conv| < window_ev`` holds for every later cycle.

    ``E_conv`` is the traced run's final energy; cycle 0 (the guess density's
    energy) counts.  The run would stop there: no ``conv_check`` build.
    ``None`` when the traced run did not converge.
    """
    if not row["converged"] or not row["trace"]:
        return None
    window = window_ev / HARTREE_TO_EV
    hit = None
    for point in row["trace"]:
        if abs(point["e_tot"] - row["e_tot"]) < window:
            hit = hit or point
        else:
            hit = None
    if hit is None:
        return None
    return {"cycles": hit["cycle"], "fock_builds": hit["fock_builds"], "wall_s": hit["t_s"]}


def tolerance_columns(row: dict) -> dict:
    """``cycles_T``, ``fock_builds_T``, ``wall_s_T`` for each stopping rule of :data:`TOLERANCES`.

    Empty where the traced run cannot tell (a tolerance tighter than its own).
    """
    out = {}
    for name, tol, window in TOLERANCES:
        if tol is not None:
            stop = stop_at_tol(row, tol) if tol >= row["conv_tol"] * (1 - 1e-12) else None
        else:
            stop = stop_within(row, window)
        for key in ("cycles", "fock_builds", "wall_s"):
            out[f"{key}_{name}"] = None if stop is None else stop[key]
    return out


def load_predictor(model="default", num_steps: int | None = None):
    """``(predictor, setup)``: the model as a Predictor and what it cost this process, once.

    ``model``: a checkpoint path or 'default' (loaded here), or any predictor
    object (returned as is).  ``setup``: ``import_s`` (torch, e3nn and the
    network modules; 0 when this process had imported them already,
    ``torch_was_imported`` says so) and ``model_load_s`` (read the weights,
    build the network).  This is the one-off cost no ``wall_s`` contains.
    """
    if not isinstance(model, (str, Path)):
        return model, {"import_s": 0.0, "model_load_s": 0.0, "torch_was_imported": None}
    was = "torch" in sys.modules
    t0 = time.perf_counter()
    import e3nn  # noqa: F401
    import torch  # noqa: F401

    from .checkpoint import load_model
    from .guess.predictor import Predictor
    t1 = time.perf_counter()
    predictor = Predictor(load_model(model), num_steps=num_steps)
    t2 = time.perf_counter()
    return predictor, {"import_s": t1 - t0, "model_load_s": t2 - t1,
                       "torch_was_imported": was}
