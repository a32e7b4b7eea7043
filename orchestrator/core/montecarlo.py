"""Direct Monte Carlo (``algorithm: montecarlo``): M independent trajectories, no splitting.

Each replica runs ``tams.trajectories`` = M trajectories from the initial state, each until
its score reaches the target (B), the horizon, or -- with ``score.score_a`` -- its fall back
into A, exactly as the initial ensemble of a TAMS replica; then the replica ends.  Its
estimate is K/M, K the number that reached B: no iteration, no weight (log W = 0).  It is the
TAMS state machine (:class:`~orchestrator.core.ensemble.Ensemble`) stopped before its first
iteration, so the segments, checkpoints, noise keys, events, store rows and resume are
TAMS's, and a montecarlo database reads (``tams report``, ``tams export``) like a TAMS one.

The interval pooled over replicas is Wilson's binomial interval
(:func:`orchestrator.core.stats.binomial_summary`; docs/algorithms.md says why).
"""
from __future__ import annotations

from orchestrator.core import events as ev
from orchestrator.core.algorithm import Outcome
from orchestrator.core.ensemble import Ensemble
from orchestrator.core.segments import Task

__all__ = ["MonteCarlo"]


class MonteCarlo(Ensemble):
    """M independent trajectories: TAMS's initial ensemble, and the replica ends there."""

    def _iterate(self) -> list[Task]:
        # every trajectory has ended: the replica is done, no splitting
        self.outcome = Outcome.CONVERGED
        self.level = float(self.maxs.min())
        self.events.append(ev.ReplicaEnded(self.r, int(self.outcome), 0, 0.0, self.n_reached()))
        return []
