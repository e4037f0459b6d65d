"""Where the wall time of one SCF goes: the guess, the first Fock build, each cycle.

``qhflow bench scf`` reports the wall time to convergence; when a run with
fewer cycles takes longer, this splits it: seconds until the first SCF cycle
ends (guess, integrals, grids, first Fock build), then each Fock build. Run
the guesses one after the other in fresh processes under the same load, so
that neither inherits the other's memory (PySCF keeps the ERIs in memory
only when ``nao**4/1e6 MB`` plus the process's own memory fits
``mf.max_memory``) or a different machine load.

    for g in qhflow minao; do
        OMP_NUM_THREADS=1 python benchmarks/time_scf_cycles.py --shards ../shared/data \\
            --qm9-index 28631 --basis def2-svpd --guess $g
    done
"""
from __future__ import annotations

import argparse
import sys
import time

from pyscf import gto

import pyscf_qhflow  # noqa: F401  (registers the 'qhflow' guess)
from pyscf_qhflow.data.dataset import ShardDataset
from pyscf_qhflow.data.shardfile import find_shards
from pyscf_qhflow.scfrun import make_scf


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shards", required=True, nargs="+")
    p.add_argument("--qm9-index", type=int, required=True)
    p.add_argument("--basis", default="def2-svp")
    p.add_argument("--xc", default="b3lyp")
    p.add_argument("--guess", default="qhflow")
    args = p.parse_args(argv)

    ds = ShardDataset(find_shards(args.shards))
    matches = [i for i in range(len(ds)) if int(ds.qm9_index[i]) == args.qm9_index]
    if not matches:
        p.error(f"QM9 index {args.qm9_index} is not in {args.shards}")
    rec = ds[matches[0]]
    mol = gto.M(atom=[(int(z), r) for z, r in zip(rec["Z"], rec["pos"])], basis=args.basis,
                unit="Angstrom", verbose=0)
    mf = make_scf(mol, args.xc)
    mf.init_guess = args.guess

    cycle_ends, build_s = [], []
    mf.callback = lambda env: cycle_ends.append(time.perf_counter())

    class Timed(mf.__class__):  # a subclass, as PySCF's sanity check forbids attributes
        def get_veff(self, *a, **k):
            t = time.perf_counter()
            veff = super().get_veff(*a, **k)
            build_s.append(time.perf_counter() - t)
            return veff

    mf.__class__ = Timed
    t0 = time.perf_counter()
    mf.kernel()
    wall = time.perf_counter() - t0
    if args.guess == "qhflow" and not (getattr(mf, "qhflow_info", None) or {}).get("used"):
        print("the qhflow guess did not run", file=sys.stderr)
        return 1
    print(f"guess {args.guess}, basis {args.basis}, nao {mol.nao}: {mf.cycles} cycles, "
          f"converged {mf.converged}, wall {wall:.1f} s, ERIs in memory {mf._eri is not None}")
    print(f"  until the end of cycle 1: {cycle_ends[0] - t0:.1f} s")
    print(f"  Fock builds (s): {' '.join(f'{x:.1f}' for x in build_s)}")
    print(f"  mean Fock build after the first: {sum(build_s[1:]) / max(len(build_s) - 1, 1):.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
