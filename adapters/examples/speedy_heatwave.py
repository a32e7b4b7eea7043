"""The heat-wave score of configs/speedy-heatwave.yaml (SPEEDY, containers/speedy).

The model reports, per model day, the daily mean near-surface (sigma = 0.95) temperature over
a European box, ``t_box`` (K), and the global mean ``t_global``.  The campaign sets
``score.window: 7``, so the orchestrator hands this function the *7-day running means* of
those values along each trajectory's path.  The score is the 7-day-mean anomaly over the
early-summer climatology, in units of the chosen anomaly:

    score = (T7(t) - (clim0 + clim_slope * t)) / anomaly

so B (score >= 1) is "the 7-day mean exceeds its climatology by ``anomaly`` kelvin".  The
climatology (``clim0``, ``clim_slope``, per day from the start on 1 June) is a least-squares
line through the ensemble-mean 7-day means of free runs (docs/speedy.md shows how it was
made).  Before day ``first_day`` (default 7, the first full 7-day window) the score is held
at ``floor``: all trajectories start from the same state, so their first days are nearly
identical and would only make TAMS split hairs (or tie) on the initial condition.
"""
import numpy as np


def score(t, obs, clim0=290.0, clim_slope=0.0, anomaly=2.0, first_day=7.0, floor=-10.0):
    t = np.asarray(t, dtype=np.float64)
    s = (np.asarray(obs)[:, 0] - (clim0 + clim_slope * t)) / anomaly
    return np.where(t >= first_day, s, floor)
