"""1-D double well: x' = x + dt (x - x^3) + sqrt(2 eps dt) xi, from x = -1; dt = 0.01, T = 10.
Score 1 - |x - 1| / 2, target 0.95 (the event x >= 0.9).  Reference p = 2.1618e-3 for
eps = 0.04 and 2.5144e-4 for eps = 0.03 (docs/references.md)."""
import math

import numpy as np


def step(state, t, dt, noise, eps=0.04):
    x = float(state[0])
    return (x + dt * (x - x * x * x) + math.sqrt(2.0 * eps * dt) * float(noise[0]),)


def score(t, obs):
    return 1.0 - np.abs(obs[:, 0] - 1.0) / 2.0


def segment(state, t0, dt, noise, eps=0.04):
    """The same chain as :func:`step`, a whole segment per call (the python adapter's fast
    path): the same floating-point operations in the same order, so the same bits."""
    x = float(state[0])
    c = math.sqrt(2.0 * eps * dt)
    xs = []
    for xi in noise[:, 0].tolist():
        x = x + dt * (x - x * x * x) + c * xi
        xs.append(x)
    states = np.array(xs).reshape(-1, 1)
    return states, states
