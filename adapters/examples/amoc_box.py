"""Score of the AMOC box model (containers/amoc-box): the trace's observables are `q, y`;
the score is `(y - y_on)/(y_off - y_on)`, 0 at the "on" state, 1 at the collapsed "off"
state (defaults: the equilibria for mu2 = 6.2, pbar = 1.1; `bin/amoc-box --roots`)."""
from __future__ import annotations

Y_ON = 0.24022920842604223
Y_OFF = 1.0687142373595653


def score(t, obs, y_on: float = Y_ON, y_off: float = Y_OFF):
    return (obs[:, 1] - y_on) / (y_off - y_on)
