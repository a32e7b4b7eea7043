"""Typed campaign metadata: what every reader of a database needs to know of its campaign.

Written once, when a database is created, so `status`, `report`, `export` and `check-db`
never re-parse the stored YAML (which is kept only as a record of what the user wrote).
:class:`Settings` is the subset the ensemble state machine runs on, plus the two run-time
values (model parameters, timeout) that are not metadata.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class ObservableMeta:
    name: str
    units: str = "1"
    long_name: str = ""


@dataclass(frozen=True)
class CampaignMeta:
    name: str
    seed: int
    replicas: int
    algorithm: str  # "tams", "montecarlo", "gklt"
    n: int  # trajectories per ensemble
    k: int  # kill_per_iteration
    target: float
    score_a: float | None
    horizon_steps: int
    dt: float
    max_iterations: int
    segment_steps: int
    noise_mode: str  # "file" | "seed"
    noise_dim: int
    checkpoint_every: int
    observables: tuple[ObservableMeta, ...]
    adapter: str
    run_dir: str = ""  # absolute path of the run directory when the database was made
    keep_states: str = "live"
    # model.time_units ("" when not given, and in databases made before the key)
    time_units: str = ""
    window: int = 1  # score.window: the score sees running means over this many steps
    # algorithm: gklt (section gklt; zero/empty for the other algorithms)
    tilt: float = 0.0  # gklt.k
    tilt_observable: str = ""  # gklt.observable (A)
    resample_every: int = 0  # gklt.resample_every (steps)
    threshold: float = 0.0  # gklt.threshold: the estimate is P(time average of A >= it)

    @property
    def time_label(self) -> str:
        """The units of model time as the report and figures say them."""
        return self.time_units or "model time units"

    @property
    def observable_names(self) -> list[str]:
        return [o.name for o in self.observables]

    @property
    def horizon(self) -> float:
        return self.horizon_steps * self.dt

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> CampaignMeta:
        d = json.loads(text)
        d["observables"] = tuple(ObservableMeta(**o) for o in d["observables"])
        return cls(**d)

    @classmethod
    def from_loaded(cls, loaded: Any, run_dir: str = "") -> CampaignMeta:
        """From a validated campaign (:class:`orchestrator.config.LoadedCampaign`)."""
        c, m = loaded.campaign, loaded.model
        return cls(name=loaded.name, seed=c.seed, replicas=c.replicas,
                   algorithm=getattr(c, "algorithm", "tams") or "tams",
                   n=c.tams.trajectories, k=c.tams.kill_per_iteration, target=c.score.target,
                   score_a=c.score.score_a, horizon_steps=loaded.n_steps, dt=m.dt,
                   max_iterations=c.tams.max_iterations, segment_steps=c.tams.segment_steps,
                   noise_mode=m.noise, noise_dim=m.noise_dim, checkpoint_every=m.checkpoint_every,
                   observables=tuple(ObservableMeta(o.name, o.units, o.long_name)
                                     for o in m.observable_specs()),
                   adapter=m.adapter, run_dir=run_dir, keep_states=c.database.keep_states,
                   time_units=getattr(m, "time_units", None) or "",
                   window=c.score.window or 1, **_gklt_fields(getattr(c, "gklt", None)))


def _gklt_fields(g: Any) -> dict[str, Any]:
    if g is None:
        return {}
    return {"tilt": float(g.k), "tilt_observable": g.observable,
            "resample_every": int(g.resample_every), "threshold": float(g.threshold)}


@dataclass(frozen=True)
class Settings:
    """Everything one replica's state machine needs: the metadata plus run-time values."""

    meta: CampaignMeta
    parameters: dict[str, Any] = field(default_factory=dict)
    timeout: float | None = None

    # the names the rules are written in
    @property
    def seed(self) -> int:
        return self.meta.seed

    @property
    def n(self) -> int:
        return self.meta.n

    @property
    def k(self) -> int:
        return self.meta.k

    @property
    def target(self) -> float:
        return self.meta.target

    @property
    def score_a(self) -> float | None:
        return self.meta.score_a

    @property
    def horizon(self) -> int:
        return self.meta.horizon_steps

    @property
    def window(self) -> int:
        return self.meta.window

    @property
    def max_iterations(self) -> int:
        return self.meta.max_iterations

    @property
    def segment_steps(self) -> int:
        return self.meta.segment_steps

    @property
    def dt(self) -> float:
        return self.meta.dt

    @property
    def noise_mode(self) -> str:
        return self.meta.noise_mode

    @property
    def noise_dim(self) -> int:
        return self.meta.noise_dim

    @property
    def checkpoint_every(self) -> int:
        return self.meta.checkpoint_every

    @property
    def n_obs(self) -> int:
        return len(self.meta.observables)
