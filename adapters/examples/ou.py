"""Ornstein–Uhlenbeck: x' = x - dt x + sigma sqrt(dt) xi, from x = 0; sigma = 0.5, dt = 0.01,
T = 5.  Score x / level, target 1 (the event x >= 1.5): reference p = 5.4596e-4."""
import math

import numpy as np


def step(state, t, dt, noise, sigma=0.5):
    x = float(state[0])
    return (x - dt * x + sigma * math.sqrt(dt) * float(noise[0]),)


def score(t, obs, level=1.5):
    return obs[:, 0] / level


def segment(state, t0, dt, noise, sigma=0.5):
    """The same chain as :func:`step`, a whole segment per call (the python adapter's fast
    path): the same floating-point operations in the same order, so the same bits."""
    x = float(state[0])
    c = sigma * math.sqrt(dt)
    xs = []
    for xi in noise[:, 0].tolist():
        x = x - dt * x + c * xi
        xs.append(x)
    states = np.array(xs).reshape(-1, 1)
    return states, states
