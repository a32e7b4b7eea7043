"""The TAMS algorithm (DESIGN §4) as pure functions: scores in, decisions out, no I/O.

The driver (``orchestrator.core.ensemble``) and the statistical tests both call exactly these
functions, so a bias here is caught by the tests that average many replicas.

Rules implemented:

* level ``z_j`` = k-th smallest of the ensemble's maximum scores; *every* trajectory with
  maximum <= z_j is killed (``K_j >= k`` with ties); killing all N is extinction (estimate 0);
* one survivor per killed trajectory, uniformly among the others, with replacement;
* branch step = first step of the survivor whose score is > z_j;
* ``log W_j = log W_{j-1} + log(1 - K_j/N)``;
* the replica stops *before* killing when ``z_j >= target`` (for k = 1 this is "every
  trajectory reached B"; for k > 1 it is the generalised AMS rule of Bréhier et al. 2016,
  which keeps the estimator unbiased), or when ``max_iterations`` iterations were done;
  the decision that triggers the stop never enters the weight;
* estimate ``p = W_J * (number with max >= target) / N``.

Classic AMS variant: with ``score_a`` set, a trajectory also ends when its score falls to
``score_a`` or below after having been above it.
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np


class Status(enum.IntEnum):
    """How a trajectory ended (stored as an integer in the database)."""

    RUNNING = 0
    REACHED = 1  # score >= target
    HORIZON = 2  # reached step T/dt without reaching B
    FELL_BACK = 3  # classic AMS: fell back into A (score <= score_a after leaving it)
    KILLED = 4  # GKLT: stopped at a resampling step with no copies (docs/algorithms.md)


class Outcome(enum.IntEnum):
    """Why a replica stopped."""

    RUNNING = 0
    CONVERGED = 1  # level reached the target
    MAX_ITERATIONS = 2
    EXTINCT = 3


@dataclass(frozen=True)
class ScanResult:
    """Where a trajectory ends inside a run of new steps (``n_keep`` of them are kept)."""

    n_keep: int
    status: Status
    left_a: bool


def scan(scores: np.ndarray, first_step: int, horizon: int, target: float,
         score_a: float | None = None, left_a: bool = True) -> ScanResult:
    """Find the end of a trajectory within consecutive new steps.

    ``scores[i]`` is the score at step ``first_step + i``.  The trajectory ends at the
    first step with score >= target (REACHED), at the first step with score <= score_a after
    having been above it (FELL_BACK, only when ``score_a`` is set) or at step ``horizon``.
    """
    n = len(scores)
    end = min(n, horizon - first_step + 1)
    n_keep = end
    status = Status.HORIZON if first_step + end - 1 >= horizon else Status.RUNNING
    hit = np.flatnonzero(scores[:end] >= target)
    if hit.size:
        n_keep, status = int(hit[0]) + 1, Status.REACHED
    if score_a is not None:
        above = scores[:n_keep] > score_a
        if left_a:
            start_a = 0
        else:
            idx = np.flatnonzero(above)
            start_a = int(idx[0]) if idx.size else n_keep
        left_a = left_a or start_a < n_keep
        if start_a < n_keep:
            back = np.flatnonzero(scores[start_a:n_keep] <= score_a)
            if back.size:
                n_keep, status = start_a + int(back[0]) + 1, Status.FELL_BACK
    return ScanResult(n_keep, status, left_a)


@dataclass(frozen=True)
class Decision:
    """One iteration's decision. ``killed`` and ``parents`` are ensemble slots, sorted by
    killed slot; ``parents[i]`` is the survivor whose path the child of ``killed[i]`` copies."""

    iteration: int
    level: float
    killed: np.ndarray
    parents: np.ndarray
    outcome: Outcome

    @property
    def n_killed(self) -> int:
        return int(self.killed.size)


def level_of(max_scores: np.ndarray, k: int) -> float:
    """The k-th smallest maximum score."""
    return float(np.partition(max_scores, k - 1)[k - 1])


def decide(iteration: int, max_scores: np.ndarray, k: int, target: float,
           rng: np.random.Generator, max_iterations: int | None = None) -> Decision:
    """Decide iteration ``iteration`` (1-based) from the ensemble's maximum scores."""
    max_scores = np.asarray(max_scores, dtype=np.float64)
    n = max_scores.size
    empty = np.zeros(0, dtype=np.int64)
    level = level_of(max_scores, k)
    if level >= target:
        return Decision(iteration, level, empty, empty, Outcome.CONVERGED)
    if max_iterations is not None and iteration > max_iterations:
        return Decision(iteration, level, empty, empty, Outcome.MAX_ITERATIONS)
    killed = np.flatnonzero(max_scores <= level).astype(np.int64)
    if killed.size >= n:
        return Decision(iteration, level, killed, empty, Outcome.EXTINCT)
    survivors = np.flatnonzero(max_scores > level).astype(np.int64)
    parents = survivors[rng.integers(0, survivors.size, size=killed.size)]
    return Decision(iteration, level, killed, parents, Outcome.RUNNING)


def branch_step(score_path: np.ndarray, level: float, first_step: int = 1) -> int:
    """First step of a path whose score is strictly above ``level``.

    ``score_path[i]`` is the score at step ``first_step + i``.
    """
    idx = np.flatnonzero(score_path > level)
    if idx.size == 0:
        raise ValueError("the survivor never rises above the level; it cannot be a survivor")
    return first_step + int(idx[0])


def next_log_weight(log_weight: float, n_killed: int, n: int) -> float:
    """log W_j = log W_{j-1} + log(1 - K_j / N)."""
    if n_killed >= n:
        return -math.inf
    return log_weight + math.log1p(-n_killed / n)


def estimate(log_weight: float, n_reached: int, n: int) -> float:
    """p = W_J * (number that reached B) / N, computed in log space."""
    if n_reached <= 0 or log_weight == -math.inf:
        return 0.0
    return math.exp(log_weight + math.log(n_reached / n))


def log_estimate(log_weight: float, n_reached: int, n: int) -> float:
    """log p; survives probabilities far below 1e-300."""
    if n_reached <= 0:
        return -math.inf
    return log_weight + math.log(n_reached / n)


def running_max_records(scores: np.ndarray, first_step: int,
                        previous_max: float = -math.inf) -> tuple[np.ndarray, np.ndarray]:
    """The records of a path's running maximum among new scores: the steps whose score
    exceeds every earlier score of the path (``previous_max`` is the maximum before
    ``first_step``), and those scores (strictly increasing).

    Why: the branch step of a survivor -- its first step above the level -- is the first
    record above the level (:func:`branch_step_from_records`), so the driver keeps these few
    records per member instead of walking a survivor's full path at every iteration.
    """
    if not scores.size:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    prev = np.maximum.accumulate(np.concatenate(([previous_max], scores[:-1])))
    rec = np.flatnonzero(scores > prev)
    return (first_step + rec).astype(np.int64), scores[rec]


def branch_step_from_records(rec_steps: np.ndarray, rec_vals: np.ndarray, level: float) -> int:
    """:func:`branch_step` of the path whose running-maximum records these are."""
    i = int(np.searchsorted(rec_vals, level, side="right"))
    if i >= rec_vals.size:
        raise ValueError("the survivor never rises above the level; it cannot be a survivor")
    return int(rec_steps[i])
