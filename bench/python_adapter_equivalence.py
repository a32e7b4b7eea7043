"""The python adapter against another revision's: same states, results and errors, bit for bit.

Runs both adapters on a grid of step and observe functions (tuples, lists, arrays, in-place
mutation of a returned list or array, ints, numpy scalars, a state that shrinks (numpy
broadcasting), grows, holds a non-number, a step that raises, scalar and 2-D states),
``checkpoint_every`` 1, 3 and 50, 1 to 213 steps, two chained segments each (the second from
a middle checkpoint), and compares the states (as read back), the observables, the checkpoint
steps, the result of ``collect`` and the error messages.  Prints the number of identical cases.

Against revisions before the record files (e518888 and older), 24 cases differ by design: the
``grid`` step (with the ``obs_grid`` observe function) turns the (2,) initial state into
(2, 1) arrays, and a checkpoint is now read back with the initial state's shape (the same
bytes), where the old .npy file kept (2, 1); 1848/1872 identical in all.

    python bench/python_adapter_equivalence.py [--against 8ac9fbc]
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

FUNCTIONS = '''
import math
import numpy as np

def tup(state, t, dt, noise, eps=0.1):
    x = float(state[0]); y = float(state[1]); s = math.sqrt(eps * dt)
    return (x + dt * (x - x * x * x) + s * float(noise[0]), y - 2.0 * dt * y + s * float(noise[1]))

def lst(state, t, dt, noise, eps=0.1):
    return list(tup(state, t, dt, noise, eps))

_buf = [0.0, 0.0]
def inplace(state, t, dt, noise, eps=0.1):
    _buf[0], _buf[1] = tup(state, t, dt, noise, eps)
    return _buf

_arr = np.zeros(2)
def inplace_arr(state, t, dt, noise, eps=0.1):
    _arr[:] = tup(state, t, dt, noise, eps)
    return _arr

def arr(state, t, dt, noise, eps=0.1):
    return np.array(tup(state, t, dt, noise, eps))

def mixed(state, t, dt, noise, eps=0.1):
    r = tup(state, t, dt, noise, eps)
    return [r, list(r), np.array(r), (np.float32(r[0]), 3)][int(round(t / dt)) % 4]

def ints(state, t, dt, noise, eps=0.1):
    k = int(round(t / dt))
    return (k, 2 ** 60 + k)

def shrink(state, t, dt, noise, eps=0.1):
    r = tup(state, t, dt, noise, eps)
    return (r[0],) if int(round(t / dt)) % 50 == 7 else r

def grow(state, t, dt, noise, eps=0.1):
    r = tup(state, t, dt, noise, eps)
    return r + (1.0,) if int(round(t / dt)) % 50 == 9 else r

def strs(state, t, dt, noise, eps=0.1):
    r = tup(state, t, dt, noise, eps)
    return (r[0], "1.5") if int(round(t / dt)) % 50 == 11 else r

def raises(state, t, dt, noise, eps=0.1):
    if int(round(t / dt)) % 50 == 13:
        raise RuntimeError("boom")
    return tup(state, t, dt, noise, eps)

def scalar(state, t, dt, noise, eps=0.1):
    x = float(np.asarray(state).reshape(-1)[0])
    return x + dt * (x - x ** 3) + math.sqrt(eps * dt) * float(noise[0])

def grid(state, t, dt, noise, eps=0.1):
    return np.asarray(state).reshape(2, 1) * 0.99 + float(noise[0])

def obs_tuple(state):
    return (float(state[0]) ** 2, float(state[1]))

def obs_scalar(state):
    return float(state[0])

def obs_arr(state):
    return np.asarray(state, dtype=float)[:1] * 2

def obs_grid(state):
    return np.asarray(state).reshape(-1)

_ob = [0.0]
def obs_inplace(state):
    _ob[0] = float(state[0]) + 1
    return _ob
'''
STEPS = ["tup", "lst", "inplace", "inplace_arr", "arr", "mixed", "ints", "shrink", "grow", "strs",
         "raises", "scalar", "grid"]
OBSERVES = [None, "obs_tuple", "obs_scalar", "obs_arr", "obs_grid", "obs_inplace"]
INITS = {"grid": [1.0, 0.5], "scalar": [-1.0]}


def states_of(model, res):
    """The checkpointed states as the adapter reads them back, wherever its version keeps them
    (a file per segment before, a record file per trajectory now): the layout is private,
    the states are not."""
    ck = res.checkpoints
    return b"".join(model._load(ck.ref(j)).tobytes() for j in range(ck.steps.size))


def run(mod, fns_dir, tmp, step, observe, every, n, s0):
    from orchestrator.core.segments import validate
    from orchestrator.model import SegmentRequest
    cfg = mod.PythonModelConfig.model_validate({
        "adapter": "python", "step": f"fns:{step}", "observe": f"fns:{observe}" if observe else None,
        "initial_state": INITS.get(step, [-1.0, 0.0]), "dt": 0.01, "noise_dim": 2,
        "observables": ["a", "b"], "checkpoint_every": every, "parameters": {"eps": 0.1}})
    model = mod.PythonModel(cfg, fns_dir)
    start = model.initial_state(os.path.join(tmp, "init"))
    noise = np.random.default_rng(s0 + n).standard_normal((n, 2))
    out = []
    for seg in range(2):
        req = SegmentRequest(workdir=os.path.join(tmp, "r0000", "t0000001", f"s{seg:08d}"),
                             start=start, step0=s0, n_steps=n, dt=0.01, checkpoint_every=every,
                             noise=noise, parameters={})
        try:
            res = model.run_segment(req)
            validate(req, res, 2)  # what the driver does next (the adapter may refuse first)
        except Exception as exc:
            out.append(("error", type(exc).__name__, str(exc).replace(tmp, "TMP")))
            break
        states = states_of(model, res)
        got = model.collect(req)
        collected = (got is not None and got.observables.tobytes() == res.observables.tobytes()
                     and got.observables.shape == res.observables.shape)
        out.append((res.steps.tobytes(), res.observables.tobytes(), res.observables.shape,
                    res.checkpoints.steps.tobytes(), states, collected))
        i = res.checkpoints.steps.size // 2
        start, s0 = res.checkpoints.ref(i), int(res.checkpoints.steps[i])
        row = model._load(start)
        out.append((row.tobytes(), row.shape, row.flags.writeable))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--against", default="8ac9fbc", help="git revision (default 8ac9fbc)")
    args = ap.parse_args()
    import importlib

    from python_adapter import adapter_at

    import adapters.python as current
    other = adapter_at(args.against)
    same = total = 0
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "fns.py").write_text(FUNCTIONS)
        sys.path.insert(0, tmp)
        import fns
        for step, observe, every, n, s0 in itertools.product(STEPS, OBSERVES, (1, 3, 50),
                                                           (1, 2, 60, 213), (0, 5)):
            total += 1
            results = []
            for k, mod in enumerate((other, current)):
                importlib.reload(fns)  # fresh module state (the in-place buffers)
                d = os.path.join(tmp, f"{total}-{k}")
                results.append(run(mod, tmp, d, step, observe, every, n, s0))
            if results[0] == results[1]:
                same += 1
            elif total - same <= 10:
                print(f"differs: step {step}, observe {observe}, checkpoint_every {every}, "
                      f"{n} steps from {s0}")
    print(f"{same}/{total} cases identical to {args.against}")
    return 0 if same == total else 1


if __name__ == "__main__":
    sys.exit(main())
