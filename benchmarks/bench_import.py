"""What `import pyscf_qhflow` costs in a fresh interpreter, against importing PySCF alone.

Each timing is a new ``python -c`` process (median of ``--repeat``), so the
numbers include interpreter start-up; the difference between the two rows is
what the package adds.  ``--tree DIR`` times another checkout instead (put on
``PYTHONPATH``), e.g. a ``git worktree`` of an older commit, for a
before/after comparison.

    python benchmarks/bench_import.py --repeat 5
    git worktree add /tmp/old 83eaf9a && python benchmarks/bench_import.py --tree /tmp/old
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

CASES = {
    "import pyscf.scf, pyscf.dft": "import pyscf.scf, pyscf.dft",
    "import pyscf_qhflow": ("import sys, pyscf_qhflow; "
                            "print(int('torch' in sys.modules))"),
}


def time_case(code: str, env: dict) -> tuple[float, str]:
    t0 = time.perf_counter()
    # cwd: an empty directory, since `python -c` puts the cwd before PYTHONPATH
    with tempfile.TemporaryDirectory() as cwd:
        out = subprocess.run([sys.executable, "-c", code], env=env, check=True, cwd=cwd,
                             capture_output=True, text=True).stdout.strip()
    return time.perf_counter() - t0, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--tree", default=None, help="checkout to import from (PYTHONPATH)")
    args = ap.parse_args(argv)
    env = dict(os.environ)
    if args.tree:
        env["PYTHONPATH"] = args.tree
    print(f"| command ({args.tree or 'installed package'}) | median s | torch loaded |")
    print("|---|---|---|")
    for name, code in CASES.items():
        runs = [time_case(code, env) for _ in range(args.repeat)]
        torch = runs[0][1] if name == "import pyscf_qhflow" else "-"
        print(f"| `{name}` | {statistics.median(t for t, _ in runs):.2f} | "
              f"{'yes' if torch == '1' else 'no' if torch == '0' else '-'} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
