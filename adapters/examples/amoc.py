"""Cessi's (1994) stochastic box model of the AMOC (containers/amoc-box): the score.

The model reports the observables ``[q, y]`` (overturning ``q = 1 - y`` and the scaled salinity
difference ``y``).  The score is ``(y - y_on)/(y_off - y_on)``: 0 on the "on" equilibrium, 1 on
the collapsed "off" one (target 1).  ``y_on``/``y_off`` are the roots printed by
``amoc-box --roots`` (defaults: mu2 = 6.2, pbar = 1.1).
"""
import numpy as np

Y_ON = 0.24022920842604223
Y_OFF = 1.0687142373595653


def score(t, obs, y_on=Y_ON, y_off=Y_OFF):
    return (np.asarray(obs)[:, 1] - y_on) / (y_off - y_on)
