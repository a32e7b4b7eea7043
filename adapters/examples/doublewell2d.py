"""2-D double well (pyTAMS's quick-start example), Euler–Maruyama:

    x' = x + dt (x - x^3) + sqrt(eps dt) xi1,   y' = y - 2 dt y + sqrt(eps dt) xi2,

from (-1, 0); eps = 0.1, dt = 0.01, T = 10.  Score
0.5 - 0.5 exp(-8 |z - a|^2) + 0.5 exp(-8 |z - b|^2), a = (-1, 0), b = (1, 0), target 0.95.
Reference p = 7.56e-3 ± 0.06e-3 (1000 steps).  The arithmetic is written in exactly the order
of the Fortran model in containers/doublewell2d, so both give the same bits.
"""
import math

import numpy as np


def step(state, t, dt, noise, eps=0.1):
    x = float(state[0])
    y = float(state[1])
    s = math.sqrt(eps * dt)
    return (x + dt * (x - x * x * x) + s * float(noise[0]), y - 2.0 * dt * y + s * float(noise[1]))


def score(t, obs):
    x = obs[:, 0]
    y = obs[:, 1]
    da = (x + 1.0) ** 2 + y ** 2
    db = (x - 1.0) ** 2 + y ** 2
    return 0.5 - 0.5 * np.exp(-8.0 * da) + 0.5 * np.exp(-8.0 * db)
