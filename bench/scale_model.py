"""The simulated model of bench/cluster_scale.py: real observables, simulated compute.

An Ornstein-Uhlenbeck process (a random walk pulled back to 0), advanced exactly from the
orchestrator's noise, so TAMS levels, kills and branches behave as on a real model; the
segment then sleeps for its steps x `cost` seconds x a log-normal spread (sigma `spread`)
drawn from the segment's own noise, so the same campaign and seed give the same durations.
"""
from __future__ import annotations

import math
import time

import numpy as np


def segment(state, t0, dt, noise, theta=0.05, sigma=1.0, cost=0.005, spread=0.3):
    n = noise.shape[0]
    a = 1.0 - theta * dt
    b = sigma * math.sqrt(dt)
    x = float(np.asarray(state).reshape(-1)[0])
    xs = np.empty(n)
    for i, z in enumerate(noise[:, 0].tolist()):
        x = a * x + b * z
        xs[i] = x
    if cost > 0:
        z0 = float(noise[0, 0])  # the segment's own standard normal: a keyed duration
        time.sleep(n * cost * math.exp(spread * z0 - 0.5 * spread * spread))
    out = xs.reshape(-1, 1)
    return out, out


def score(t, obs):
    return obs[:, 0] / 10.0  # x / 10: the target 1.0 is x = 10 (about 3 stationary std)
