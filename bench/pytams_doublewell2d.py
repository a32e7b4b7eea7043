"""One pyTAMS 1.0.0 replica of the 2-D double well (REFERENCES.md), run inside pyTAMS's venv.

Written for ``bench/compare_pytams.py`` against pyTAMS 1.0.0's documented forward-model API
(``pytams.fmodel.ForwardModelBaseClass``: ``_init_model``, ``_advance``, ``get_current_state``,
``set_current_state``, ``score``, ``make_noise``, ``name``) and its TOML input
(``[tams] ntrajectories/nsplititer``, ``[trajectory] end_time/step_size/targetscore``,
``[runner] type/nworker_init/nworker_iter``, ``[database] path``).  It imports nothing from the
orchestrator: it runs with pyTAMS's own interpreter.

    <pytams-venv>/bin/python bench/pytams_doublewell2d.py WORKDIR [--n 50] [--workers 2]

prints one JSON line: estimate, model steps, wall seconds of the ``compute_probability`` call,
peak RSS of the driver and of its worker processes, bytes of the XML database, stored
snapshots, and the round-trip error of a state through pyTAMS's XML writer.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
from pytams.fmodel import ForwardModelBaseClass

EPS = 0.1


class DoubleWell2D(ForwardModelBaseClass):
    """x' = x + dt (x - x^3) + sqrt(eps dt) xi1,  y' = y - 2 dt y + sqrt(eps dt) xi2, from (-1, 0).

    pyTAMS gives a model no seed: the noise comes from a generator seeded by the operating
    system (a generator seeded by the model id would give every replica the same noise).
    """

    def _init_model(self, m_id, params):
        self._eps = float(params.get("model", {}).get("epsilon", EPS))
        self._x = -1.0
        self._y = 0.0
        self._rng = np.random.default_rng()

    def _advance(self, step, time, dt, noise, need_end_state):
        s = math.sqrt(self._eps * dt)
        x, y = self._x, self._y
        self._x = x + dt * (x - x * x * x) + s * float(noise[0])
        self._y = y - 2.0 * dt * y + s * float(noise[1])
        return dt

    def get_current_state(self):
        return np.array([self._x, self._y])

    def set_current_state(self, state):
        self._x, self._y = float(state[0]), float(state[1])

    def score(self):
        da = (self._x + 1.0) ** 2 + self._y ** 2
        db = (self._x - 1.0) ** 2 + self._y ** 2
        return 0.5 - 0.5 * math.exp(-8.0 * da) + 0.5 * math.exp(-8.0 * db)

    def make_noise(self):
        return self._rng.standard_normal(2)

    @classmethod
    def name(cls):
        return "DoubleWell2D"


TOML = """\
[tams]
ntrajectories = {n}
nsplititer = {nsplit}
loglevel = "WARNING"

[trajectory]
end_time = 10.0
step_size = 0.01
targetscore = 0.95

[model]
epsilon = {eps}

[runner]
type = "asyncio"
nworker_init = {workers}
nworker_iter = {workers}
{database}"""

# pyTAMS's own example keeps its database in memory; an on-disk XML database (``--db``) costs
# it much more time, so speed is measured without it and disk use in a separate run.
DATABASE = """
[database]
path = "db"
"""


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _xml_roundtrip_error() -> float:
    """Largest relative error of a state written by pyTAMS's XML writer and read back."""
    from pytams.xmlutils import manual_cast_str
    rng = np.random.default_rng(0)
    worst = 0.0
    for _ in range(1000):
        state = rng.normal(size=2)
        back = manual_cast_str("ndarray[float]", str(state))
        worst = max(worst, float(np.max(np.abs(back - state) / np.abs(state))))
    return worst


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("workdir")
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--db", action="store_true", help="keep pyTAMS's XML database on disk")
    args = ap.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)
    Path("input.toml").write_text(TOML.format(n=args.n, nsplit=100 * args.n, eps=EPS,
                                              workers=args.workers,
                                              database=DATABASE if args.db else ""))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from pytams.tams import TAMS

    # the class must be importable by pyTAMS's worker processes: import it by module name
    from pytams_doublewell2d import DoubleWell2D as Model
    t0 = time.perf_counter()
    tams = TAMS(fmodel_t=Model, a_args=["-i", "input.toml"])
    p = tams.compute_probability()
    wall = time.perf_counter() - t0
    tdb = tams.get_database()
    steps = int(tdb.count_computed_steps())
    iterations = int(tdb.k_split())
    snaps = sum(len(t.get_score_array()) for t in tdb.traj_list())
    snaps += sum(len(t.get_score_array()) for t in getattr(tdb, "_archived_trajs_db", []))
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    out = {"estimate": p, "steps": steps, "wall": wall, "kills": iterations,
           "peak_driver_kb": self_kb, "peak_worker_kb": child_kb,
           "disk_bytes": _dir_bytes(Path("db")) if args.db else None, "stored_snapshots": snaps,
           "xml_state_rel_error": _xml_roundtrip_error()}
    del tams
    print("RESULT " + json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
