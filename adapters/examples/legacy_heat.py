"""Score of the legacy-heat example (containers/legacy-heat, docs/wrapping.md): a hot spell,
the atmosphere temperature anomaly ta (observable 0, in K) over a threshold."""
import numpy as np


def score(t, obs, threshold=2.0):
    return np.asarray(obs[:, 0], dtype=np.float64) / threshold
