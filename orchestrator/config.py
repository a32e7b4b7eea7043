"""Campaign configuration: strict pydantic models loaded from one YAML file.

Every key is documented in ``docs/configuration.md`` (a test checks that the two agree).
Every way a YAML can be wrong becomes one :class:`~orchestrator.errors.ConfigError`
sentence: the file, the key, what is wrong and the fix.

Sections whose keys depend on one key are pydantic discriminated unions over plug-ins found
through the registry (:func:`tagged_union`): ``runner`` by ``kind`` (the ``tams.runners``
entry points), an executable ``model`` by ``launcher`` (``tams.launchers``).  So the class
validating a campaign, :func:`campaign_model`, is built on first use from what is
installed (never at import, so a broken plug-in cannot break ``import orchestrator``).

Paths: *inputs* named in the YAML (model files, modules) are relative to the YAML's
directory; *outputs* (the database) are relative to the current directory, like any
command-line tool's output.
"""
from __future__ import annotations

import difflib
import functools
import math
import operator
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from orchestrator.errors import ConfigError


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Observable(Strict):
    """One observable the model reports at each step (a column of the trace)."""

    name: str = Field(description="Name of the observable (a column of the trace), e.g. `amoc`.")
    units: str = Field("1", description="Units (CF/UDUNITS string) used when exporting.")
    long_name: str = Field("", description="Human-readable description used when exporting.")


class ModelSection(Strict):
    """Keys common to every adapter; each adapter extends this with its own keys."""

    adapter: str = Field(description="Which adapter runs the model, e.g. `python`; each adapter "
                         "adds its own keys (configuration reference: one section per adapter).")
    dt: float = Field(description="Model time step (> 0). Step s is at time s*dt.")
    noise_dim: int = Field(1, description="Number of standard-normal noise values per step (>= 1).")
    noise: Literal["file", "seed"] = Field(
        "file", description="`file`: the orchestrator supplies every step's noise (exact "
        "branching); `seed`: the model draws its own noise from a per-segment seed.")
    observables: list[str | Observable] = Field(
        description="Names (or {name, units, long_name}) of the observables reported at each step, "
        "in trace column order.")
    checkpoint_every: int = Field(
        1, description="The model writes a checkpoint every this many steps (and at each segment's "
        "last step).")
    parameters: dict[str, Any] = Field(
        default_factory=dict, description="Free-form model parameters passed to the model.")
    time_units: str | None = Field(
        None, description="Units of model time (step s is at time s*dt), e.g. `days`: shown in "
        "the report and its figures, stored in the database and given as the CF `units` of "
        "`time` in the netCDF export. null: \"model time units\". Changes no result.")

    @field_validator("time_units")
    @classmethod
    def _time_units(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("must be a non-empty string such as days, or null")
        return v

    @field_validator("dt")
    @classmethod
    def _dt_positive(cls, v: float) -> float:
        if not (v > 0 and math.isfinite(v)):
            raise ValueError("must be a finite number > 0; set the model time step, e.g. 0.01")
        return v

    @field_validator("noise_dim", "checkpoint_every")
    @classmethod
    def _positive_int(cls, v: int) -> int:
        if v < 1:
            raise ValueError("must be an integer >= 1")
        return v

    @field_validator("observables")
    @classmethod
    def _obs(cls, v: list) -> list:
        if not v:
            raise ValueError("must list at least one observable, e.g. [x]")
        names = [o if isinstance(o, str) else o.name for o in v]
        if len(set(names)) != len(names):
            raise ValueError(f"names must be unique (got {names})")
        return v

    def observable_specs(self) -> list[Observable]:
        return [Observable(name=o) if isinstance(o, str) else o for o in self.observables]


class ScoreSection(Strict):
    """The score function xi(t, observables), computed by the orchestrator, and the target B."""

    function: str = Field(description="Import path `module:function` of the score function "
                          "`score(t, observables, **parameters) -> scores` (vectorised over steps).")
    target: float = Field(1.0, description="B is reached when the score >= target.")
    score_a: float | None = Field(
        None, description="Classic AMS variant: a trajectory also ends when its score falls to "
        "score_a or below after having been above it. `null` (default): fixed-horizon TAMS.")
    parameters: dict[str, Any] = Field(default_factory=dict,
                                       description="Keyword arguments of the score function.")
    window: int | None = Field(
        None, description="Windowed score, in steps: the score function is given, at each step "
        "s, the mean of the observables over the last `window` steps of the trajectory's path "
        "(steps max(1, s-window+1)..s, the parent's steps before a branch included), computed "
        "by the orchestrator, so the model reports plain per-step values (e.g. daily "
        "temperatures for a 7-day-mean heat-wave index: `window: 7` with dt = 1 day). "
        "Branching stays exact. `null` (default) or 1: the score sees each step's observables.")

    @field_validator("window")
    @classmethod
    def _window(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise ValueError("must be an integer >= 1 (a number of steps), or null for no window")
        return v

    @field_validator("function")
    @classmethod
    def _import_path(cls, v: str) -> str:
        if ":" not in v or v.startswith(":") or v.endswith(":"):
            raise ValueError("must be an import path 'module:function', e.g. mymodel:score")
        return v


class TamsSection(Strict):
    """The TAMS algorithm's settings (DESIGN §4)."""

    trajectories: int = Field(description="N, the ensemble size (>= 2).")
    kill_per_iteration: int = Field(
        1, description="k, trajectories killed per iteration (>= 1, < N; ties kill more). A "
        "statistical choice, independent of the number of workers.")
    horizon: float = Field(description="T, the time horizon; trajectories run round(T/dt) steps.")
    max_iterations: int = Field(100000, description="Stop a replica after this many iterations "
                                "(the estimate is then biased; it is reported as such).")
    segment_steps: int = Field(250, description="Steps per model run (segment); a trajectory "
                               "is run in segments of this many steps.")

    @field_validator("trajectories")
    @classmethod
    def _n(cls, v: int) -> int:
        if v < 2:
            raise ValueError("must be an integer >= 2 (the ensemble size N)")
        return v

    @field_validator("kill_per_iteration", "max_iterations", "segment_steps")
    @classmethod
    def _pos(cls, v: int) -> int:
        if v < 1:
            raise ValueError("must be an integer >= 1")
        return v

    @field_validator("horizon")
    @classmethod
    def _t(cls, v: float) -> float:
        if not (v > 0 and math.isfinite(v)):
            raise ValueError("must be a finite time > 0")
        return v

    @field_validator("kill_per_iteration")
    @classmethod
    def _k_lt_n(cls, v: int, info: ValidationInfo) -> int:
        n = info.data.get("trajectories")  # absent if trajectories itself is invalid
        if n is not None and v >= n:
            raise ValueError(f"must be smaller than tams.trajectories ({n}); k = 1 is the usual "
                             "choice")
        return v


class GkltSection(Strict):
    """The GKLT cloning algorithm's settings (`algorithm: gklt`; docs/algorithms.md). The
    ensemble size N, the horizon and `segment_steps` are the `tams` section's
    (`trajectories`, `horizon`, `segment_steps`)."""

    k: float = Field(description="The tilt k: at every resampling step each trajectory is "
                     "weighted by exp(k * sum of A over the interval * dt) / R (R the ensemble "
                     "mean of those factors). k > 0 favours large time averages of A.")
    observable: str = Field(description="A, the observable whose time average over the horizon "
                            "is studied: one of `model.observables`.")
    resample_every: int = Field(description="Steps between resamplings (>= 1); the resampling "
                                "steps are its multiples up to and including the horizon.")
    threshold: float = Field(description="Each replica's estimate is the probability that the "
                             "time average of A over the horizon is >= this; `tams report` also "
                             "gives the probability and return time for a range of thresholds.")

    @field_validator("resample_every")
    @classmethod
    def _every(cls, v: int) -> int:
        if v < 1:
            raise ValueError("must be an integer >= 1 (a number of steps)")
        return v

    @field_validator("k", "threshold")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v


_WALLTIME = re.compile(r"^(\d+-)?\d{1,3}:\d{2}:\d{2}$")


class SlurmSection(Strict):
    """Slurm blocks for `runner.kind: slurm` (Parsl HighThroughputExecutor + SlurmProvider).
    A *block* is one batch job holding `nodes_per_block` nodes, each running one Parsl worker
    pool of `workers_per_node` workers; the driver submits, replaces and cancels blocks
    itself (docs/hpc.md).  Only with `runner.kind: slurm`."""

    partition: str | None = Field(None, description="Slurm partition (`#SBATCH --partition`); "
                                  "null: the cluster's default partition.")
    account: str | None = Field(None, description="Slurm account charged for the blocks "
                                "(`#SBATCH --account`); null: your default account.")
    qos: str | None = Field(None, description="Slurm quality of service (`#SBATCH --qos`); "
                            "null: the default.")
    walltime: str = Field("01:00:00", description="Wall-clock limit of each block, "
                          "`HH:MM:SS` or `D-HH:MM:SS`. A block that reaches it is replaced by "
                          "a new one and its segments are re-run (docs/hpc.md).")
    nodes_per_block: int = Field(1, description="Nodes per block (one Parsl worker pool per "
                                 "node).")
    workers_per_node: int | None = Field(
        None, description="Segments run at the same time on each node; null: `runner.workers`.")
    cores_per_worker: float = Field(1.0, description="Cores each worker (segment) is given; "
                                    "with `workers_per_node: null` Parsl also caps the workers "
                                    "per node at cores / cores_per_worker.")
    init_blocks: int = Field(1, description="Blocks submitted when the run starts.")
    min_blocks: int = Field(1, description="Blocks kept alive: a block that ends (walltime, "
                            "`scancel`, node failure) is replaced while fewer are running.")
    max_blocks: int = Field(1, description="Most blocks at once; more are submitted while "
                            "segments are waiting.")
    scheduler_options: str = Field("", description="Extra lines for the batch script, e.g. "
                                   "`\"#SBATCH --mem=4G\\n#SBATCH --constraint=cpu\"`.")
    worker_init: str | None = Field(
        None, description="Shell commands run in each block before its workers start (module "
        "loads, environment activation). null: activate the driver's own virtual environment "
        "(`<sys.prefix>/bin/activate`), so workers import the same project and use the "
        "driver's Python; a custom value must put a Python with this project on PATH as "
        "`python3`.",
        json_schema_extra={"doc_default": "activate the driver's virtual environment"})
    launcher: Literal["srun", "single"] = Field(
        "srun", description="How a block starts its worker pools: `srun` (one per node, the "
        "default) or `single` (directly in the batch script; one node only).")
    poll_interval: float = Field(
        10.0, description="Seconds between the driver's `squeue` polls: a block that ended "
        "(walltime, `scancel`) is noticed and replaced within about this time. Parsl's own "
        "default is 60; stay >= 10 on a shared cluster.")
    exclusive: bool = Field(True, description="Request whole nodes (`#SBATCH --exclusive`).")
    address: str | None = Field(
        None, description="Address the workers connect back to (the driver's interchange). "
        "null: `runner.address` (loopback: driver and blocks on one host). On a real cluster "
        "give the login node's address on the compute network, `hostname` (the address the "
        "driver's host name resolves to) or `interface:NAME` (e.g. `interface:ib0`).")

    @field_validator("walltime")
    @classmethod
    def _walltime(cls, v: str) -> str:
        if not _WALLTIME.match(v):
            raise ValueError("must be HH:MM:SS or D-HH:MM:SS, e.g. '02:00:00'")
        return v

    @field_validator("nodes_per_block", "max_blocks")
    @classmethod
    def _pos(cls, v: int) -> int:
        if v < 1:
            raise ValueError("must be an integer >= 1")
        return v

    @field_validator("init_blocks", "min_blocks")
    @classmethod
    def _nonneg(cls, v: int) -> int:
        if v < 0:
            raise ValueError("must be an integer >= 0")
        return v

    @field_validator("workers_per_node")
    @classmethod
    def _wpn(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise ValueError("must be an integer >= 1, or null for runner.workers")
        return v

    @field_validator("cores_per_worker", "poll_interval")
    @classmethod
    def _cpw(cls, v: float) -> float:
        if not (v > 0 and math.isfinite(v)):
            raise ValueError("must be a number > 0")
        return v

    @field_validator("max_blocks")
    @classmethod
    def _max_ge(cls, v: int, info: ValidationInfo) -> int:
        lo = max(info.data.get("init_blocks") or 0, info.data.get("min_blocks") or 0)
        if v < lo:
            raise ValueError(f"must be at least init_blocks and min_blocks ({lo})")
        return v

    @field_validator("launcher")
    @classmethod
    def _launcher(cls, v: str, info: ValidationInfo) -> str:
        if v == "single" and (info.data.get("nodes_per_block") or 1) > 1:
            raise ValueError("`single` starts one worker pool, so it needs nodes_per_block: 1; "
                             "use `srun`")
        return v

    @field_validator("address")
    @classmethod
    def _address(cls, v: str | None) -> str | None:
        if v is not None and (not v or (v.startswith("interface:") and len(v) == 10)):
            raise ValueError("must be an address, `hostname` or `interface:NAME`")
        return v


class RunnerSection(Strict):
    """Where and how many segments run at once (Parsl).  Never changes the results.  These keys
    are common to every runner kind; `kind` picks one, and a kind may add keys of its own
    (`kind: slurm` adds the section `runner.slurm`)."""

    kind: str = Field(
        "threads", description="The runner kind: `threads` (Parsl ThreadPoolExecutor, default), "
        "`processes` (Parsl HighThroughputExecutor on this machine, bound to loopback), `slurm` "
        "(HighThroughputExecutor whose workers run in Slurm batch jobs; section `runner.slurm`), "
        "or a kind a plug-in registers (docs/plugins.md).")
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1,
                         description="Segments run at the same time (default: the number of cores).",
                         json_schema_extra={"doc_default": "the number of cores"})
    retries: int = Field(1, description="Times a segment whose model failed is re-run before "
                         "the campaign stops. A segment lost with its worker (a Slurm block "
                         "cancelled, a node lost) is re-run without counting here.")
    segment_timeout: float | None = Field(
        None, description="Seconds after which a segment is killed (whole process group); null: none.")
    address: str = Field("127.0.0.1", description="Address Parsl's interchange binds to "
                         "(`processes`, `slurm`); loopback unless workers run elsewhere.")

    @field_validator("workers")
    @classmethod
    def _w(cls, v: int) -> int:
        if v < 1:
            raise ValueError("must be an integer >= 1")
        return v

    @field_validator("retries")
    @classmethod
    def _r(cls, v: int) -> int:
        if v < 0:
            raise ValueError("must be an integer >= 0")
        return v

    @field_validator("segment_timeout")
    @classmethod
    def _to(cls, v: float | None) -> float | None:
        if v is not None and not v > 0:
            raise ValueError("must be a number of seconds > 0, or null for no timeout")
        return v

    @classmethod
    def variants(cls) -> dict[str, type[RunnerSection]]:
        """Every registered runner kind: name -> its class (a subclass of this one)."""
        from orchestrator.registry import RUNNERS
        return {name: RUNNERS.load(name) for name in RUNNERS.names()}

    def parsl_executor(self, run_dir: Path) -> Any:
        """The Parsl part this kind contributes (orchestrator/runtime/executor.py): each runner
        kind, built-in or plug-in, implements it; the section itself cannot run anything."""
        raise NotImplementedError(f"runner kind {self.kind!r} does not build a Parsl executor")


class DatabaseSection(Strict):
    """The HDF5 database and the directory of model states.  Never changes the results."""

    path: str | None = Field(None, description="The HDF5 database (relative to the current "
                             "directory); default `<campaign file stem>.h5`.")
    run_dir: str | None = Field(None, description="Directory for segment directories and states; "
                                "default: the database path with `.run` instead of `.h5`.")
    keep_states: Literal["live", "all"] = Field(
        "live", description="`live`: delete states no live trajectory can branch from; `all`: keep.")
    commit_interval: float = Field(
        2.0, description="Seconds between the driver's commits to the database: what `tams "
        "status` sees lags by about this much. Segments finished after the last commit are not "
        "lost (their completed directories are ingested on resume); shorter costs more writes. "
        "A minimum: a commit that takes over 0.1 s (many replicas at once) stretches it to ten "
        "times its own duration, so that commits stay about a tenth of the run.")

    @field_validator("commit_interval")
    @classmethod
    def _commit_interval(cls, v: float) -> float:
        if not (v > 0 and math.isfinite(v)):
            raise ValueError("must be a number of seconds > 0, e.g. 2")
        return v


# The `runner` keys depend on the installed runner kinds, so the class that validates a
# campaign is campaign_model(), a subclass whose `runner` is their discriminated union; every
# loaded campaign is an instance of both.  (The docstring is the reference's text.)
class Campaign(Strict):
    """One campaign: the top level of the YAML file."""

    name: str | None = Field(None, description="Campaign name (default: the YAML file's stem).")
    seed: int = Field(description="The campaign seed (an integer >= 0): the same seed gives the "
                      "same results, bit for bit.")
    replicas: int = Field(1, description="Independent TAMS estimates run concurrently (>= 1).")
    algorithm: str = Field("tams", description="The rare-event algorithm each replica runs, by "
                           "its registered name (entry-point group `tams.algorithms`, "
                           "docs/plugins.md): `tams` (the default), `montecarlo` (direct Monte Carlo of "
                           "`tams.trajectories` independent trajectories) or `gklt` (the "
                           "GKLT cloning algorithm, section `gklt`); docs/algorithms.md.")
    model: dict[str, Any] = Field(description="The forward model; keys depend on `adapter`.")
    score: ScoreSection = Field(description="The score function and target (section `score`).")
    tams: TamsSection = Field(description="The ensemble settings every algorithm uses: N "
                              "(`montecarlo`: M), k, horizon (section `tams`).")
    gklt: GkltSection | None = Field(None, description="The GKLT settings, required with "
                                     "`algorithm: gklt` and refused with any other (section "
                                     "`gklt`).")
    runner: RunnerSection = Field(
        default_factory=lambda: default_runner(), description="Execution: threads, "
        "processes or Slurm, workers, retries (section `runner`).",
        json_schema_extra={"doc_default": "`kind: threads` with its defaults"})
    database: DatabaseSection = Field(default_factory=DatabaseSection,
                                      description="Where results and states are stored (section "
                                      "`database`).")

    @field_validator("seed")
    @classmethod
    def _seed(cls, v: int) -> int:
        if not 0 <= v < 2**63:
            raise ValueError("must be an integer in [0, 2**63)")
        return v

    @field_validator("replicas")
    @classmethod
    def _rep(cls, v: int) -> int:
        if v < 1:
            raise ValueError("must be an integer >= 1")
        return v


def default_runner() -> RunnerSection:
    """`runner` when the YAML has none: the `threads` kind with its defaults."""
    return RunnerSection.variants()["threads"]()


@functools.cache
def campaign_model() -> type[Campaign]:
    """The class validating a whole campaign, built once per process (on first use, not at
    import: it reads the registry): :class:`Campaign` with ``runner`` the discriminated union
    of the runner kinds installed (built-ins and plug-ins)."""
    runner_type = runner_union()

    class ValidatedCampaign(Campaign):
        __doc__ = Campaign.__doc__
        runner: runner_type = Field(  # type: ignore[valid-type]
            default_factory=default_runner, description=Campaign.model_fields["runner"].description,
            json_schema_extra={"doc_default": "`kind: threads` with its defaults"})

    ValidatedCampaign.__name__ = ValidatedCampaign.__qualname__ = "Campaign"
    return ValidatedCampaign


def runner_union() -> Any:
    """The ``runner`` section's type: by ``kind`` (default ``threads``), over the registry."""
    return tagged_union("kind", RunnerSection.variants(), default="threads", what="runner kind")


def tagged_union(key: str, members: Mapping[str, type[BaseModel]], default: str,
                 what: str) -> Any:
    """A pydantic discriminated union: the value of ``key`` (``default`` when absent) picks
    the member ``members[value]`` that validates the whole mapping.

    The members come from the registry, so a plug-in's section validates exactly like a
    built-in's.  The tags are ``"key: value"``, which no YAML key can be, so the message
    formatter (:func:`format_validation_error`) tells them from keys.  Two mistakes get
    their own sentence: an unknown value (``unknown_choice``: "use one of ...") and a
    section of another member (``other_section``: ``model.docker`` with ``launcher: local``)."""
    def tag_of(v: Any) -> str:
        value = v.get(key, default) if isinstance(v, dict) else default  # not a mapping: the
        return f"{key}: {value}" if isinstance(value, str) else f"{key}: ?"  # default says so

    def other_sections(v: Any) -> Any:
        chosen = v.get(key, default) if isinstance(v, dict) else None
        own = members.get(chosen) if isinstance(chosen, str) else None
        if own is None:
            return v
        for k in v:
            owners = [n for n, m in members.items() if k in m.model_fields]
            if k not in own.model_fields and owners:
                raise PydanticCustomError("other_section", "a section of another {key}", {
                    "at": k, "key": key, "owners": ", ".join(owners), "chosen": chosen})
        return v

    tagged = [Annotated[m, Tag(f"{key}: {name}")] for name, m in members.items()]
    union = functools.reduce(operator.or_, tagged)  # Union[...] of the tagged members
    return Annotated[union, Discriminator(
        tag_of, custom_error_type="unknown_choice", custom_error_message=f"unknown {what}",
        custom_error_context={"at": key, "what": what, "expected": repr(sorted(members))}),
        BeforeValidator(other_sections)]


class LoadedCampaign:
    """A validated campaign plus what was derived from its file."""

    def __init__(self, campaign: Campaign, model: ModelSection, path: Path, text: str,
                 base_dir: str | None = None):
        self.campaign = campaign
        self.model = model
        self.path = path
        self.text = text
        self.base_dir = base_dir or str(path.resolve().parent)
        self.name = campaign.name or path.stem

    @property
    def n_steps(self) -> int:
        return round(self.campaign.tams.horizon / self.model.dt)

    def db_path(self, override: str | None = None) -> Path:
        return Path(override or self.campaign.database.path or f"{self.name}.h5")

    def run_dir(self, db_path: Path) -> Path:
        if self.campaign.database.run_dir:
            return Path(self.campaign.database.run_dir)
        return db_path.with_suffix(".run")


_FIXES = {
    "missing": "is required; add it",
    "extra_forbidden": "is not a known key; remove it or check its spelling",
    "int_type": "must be an integer",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "string_type": "must be a string (quote it)",
    "bool_type": "must be true or false",
    "list_type": "must be a list",
    "dict_type": "must be a mapping of keys to values",
    "model_type": "must be a mapping of keys to values",
    "model_attributes_type": "must be a mapping of keys to values",
    "literal_error": "must be one of the allowed values",
}


_AT_KEY = ("unknown_choice", "other_section")  # tagged_union's errors: ctx["at"] is the key
_NO_DATA = object()  # format_validation_error called without the YAML: every loc part is a key


def _key_parts(e: ErrorDetails, data: Any) -> tuple[list, int | None]:
    """The YAML key path of one pydantic error, without pydantic's union-member tags
    (``str``, ``list[float]``, ``Observable``, ...), and the position of the first tag (the
    union whose alternatives all failed), or None.  A loc element is a key if the YAML has it
    there (or it is the missing key); anything else is a tag."""
    loc = e["loc"]
    parts: list = []
    union_at = None
    node = data
    for i, p in enumerate(loc):
        if isinstance(p, int):
            parts.append(p)
            node = node[p] if isinstance(node, list) and 0 <= p < len(node) else None
        elif isinstance(node, dict) and p in node:
            parts.append(p)
            node = node[p]
        elif node is _NO_DATA or (i == len(loc) - 1 and e["type"] == "missing"):
            parts.append(p)
        elif union_at is None:
            union_at = len(parts)
    if e["type"] in _AT_KEY:  # raised for the whole mapping, about one key of it
        parts.append(e["ctx"]["at"])
    return parts, union_at


def _key(parts: list, prefix: str = "") -> str:
    out = prefix
    for p in parts:
        out = f"{out}[{p}]" if isinstance(p, int) else (f"{out}.{p}" if out else str(p))
    return out or "(top level)"


def _model_at(cls: Any, parts: list, data: Any = None) -> type[BaseModel] | None:
    """The pydantic model that validates the mapping at ``parts`` (None if not a model);
    ``cls`` may be a union, as may every annotation on the way: its member is the one the
    YAML chose (the member that has the key the YAML has there)."""
    def models(tp) -> list[type[BaseModel]]:
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            return [tp]
        return [m for arg in get_args(tp) for m in models(arg)]

    def chosen(m: type[BaseModel], node: dict) -> bool:  # its discriminator matches the YAML
        return all(node[k] in get_args(f.annotation) for k, f in m.model_fields.items()
                   if get_origin(f.annotation) is Literal and k in node
                   and isinstance(node[k], str))

    def pick(tp, node) -> type[BaseModel] | None:
        found = models(tp)
        if not isinstance(node, dict):
            return found[0] if found else None
        return max(found, key=lambda m: (chosen(m, node), len(set(node) & set(m.model_fields))),
                   default=None)

    node = data if isinstance(data, dict) else None
    model = pick(cls, node)
    for p in parts:
        if isinstance(p, int):
            node = node[p] if isinstance(node, list) and 0 <= p < len(node) else None
            continue
        field = model.model_fields.get(p) if model is not None else None
        node = node.get(p) if isinstance(node, dict) else None
        model = pick(field.annotation, node) if field is not None else None
    return model


def _what(e: ErrorDetails, cls: Any, parts: list, data: Any = None) -> str:
    kind = e["type"]
    ctx = e.get("ctx", {})
    if kind == "unknown_choice":
        given = e["input"].get(ctx["at"]) if isinstance(e["input"], dict) else e["input"]
        return f"unknown {ctx['what']} {given!r}; use one of {ctx['expected']}"
    if kind == "other_section":
        return (f"is the section of {ctx['key']} {ctx['owners']}, but {ctx['key']} is "
                f"{ctx['chosen']}; set `{ctx['key']}: {ctx['owners'].split(', ')[0]}` or remove it")
    if kind == "value_error":
        return str(e.get("ctx", {}).get("error", e["msg"]))
    if kind == "literal_error":
        return f"must be one of {e.get('ctx', {}).get('expected', '')}"
    if kind == "extra_forbidden":
        known = list(getattr(_model_at(cls, parts[:-1], data), "model_fields", {}))
        close = difflib.get_close_matches(str(parts[-1]), known, n=1, cutoff=0.6)
        if close:
            return f"is not a known key (did you mean {close[0]}?); fix its spelling or remove it"
        if known:
            return f"is not a known key; remove it (the keys here are {', '.join(known)})"
    return _FIXES.get(kind, e["msg"][0].lower() + e["msg"][1:])


def format_validation_error(path: Path, err: ValidationError, prefix: str = "",
                            data: Any = _NO_DATA, model: type[BaseModel] | None = None) -> str:
    """One sentence for a pydantic error: the file, the key, what is wrong and the fix.

    ``data`` is the validated YAML (to tell keys from union tags), ``model`` the class (or
    union) that validated it (to suggest the spelling of an unknown key).  When every alternative of a
    union failed (``initial_state: 5``), the alternative that got furthest is reported, or,
    if several got equally far, all of them: "must be a list or a string"."""
    errors = err.errors()
    keyed = [(e, *_key_parts(e, data)) for e in errors]

    def place(k):  # problems are counted per place: the alternatives of one union are one
        return ("union", *k[1][:k[2]]) if k[2] is not None else ("key", *k[1])

    first = place(keyed[0])
    group = [k for k in keyed if place(k) == first]
    deepest = max(len(k[1]) for k in group)
    group = [k for k in group if len(k[1]) == deepest]
    e, parts, _ = group[0]
    whats = list(dict.fromkeys(_what(g[0], model, g[1], data) for g in group if g[1] == parts))
    what = " or ".join([whats[0]] + [w.removeprefix("must be ") for w in whats[1:]])
    got = ""
    if e["type"] not in ("missing", "extra_forbidden", *_AT_KEY) and "input" in e and (
            not isinstance(e["input"], (dict, list)) or len(repr(e["input"])) <= 40):
        got = f" (got {e['input']!r})"
    others = len({place(k) for k in keyed}) - 1
    more = f" ({others} more problem(s) after this one)" if others else ""
    what, sep, fix = what.partition("; ")  # "what is wrong (got ...); the fix"
    return f"{path}: key {_key(parts, prefix)}: {what}{got}{sep}{fix}{more}."


def _adapter_config_class(name: Any, path: Path) -> type[ModelSection]:
    from orchestrator.registry import adapter_class, known_adapters
    if name is None:
        raise ConfigError(f"{path}: key model.adapter: is required and must be one of "
                          f"{known_adapters()}; add e.g. 'adapter: python'.")
    if not isinstance(name, str):
        raise ConfigError(f"{path}: key model.adapter: must be the name of an adapter, one of "
                          f"{known_adapters()} (got {name!r}).")
    try:
        return adapter_class(name).Config
    except KeyError as exc:  # UnknownName: the sentence lists the installed adapters
        raise ConfigError(f"{path}: key model.adapter: {exc}.") from None


def load(path: str | os.PathLike) -> LoadedCampaign:
    """Load and validate a campaign; raise ConfigError with one sentence on any problem."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such campaign file; check the path.") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the campaign file ({exc.__class__.__name__}); "
                          "give a readable YAML file.") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        fix = "indent with spaces, not tabs" if "\\t" in problem else "fix the YAML there"
        raise ConfigError(f"{path}{where}: YAML syntax error ({problem}); {fix}.") from None
    if data is None:
        raise ConfigError(f"{path}: the file is empty; write a campaign (see configs/ for examples).")
    return load_data(data, path, text=text)


def load_data(data: Any, path: Path, text: str | None = None,
              base_dir: str | None = None) -> LoadedCampaign:
    """Validate a campaign given as data (a YAML file's contents, or a dict from the Python
    API); ``path`` names it in messages; ``base_dir`` resolves relative inputs (default: the
    directory of ``path``)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys (seed, model, score, "
                          f"tams, ...), not a {type(data).__name__}.")
    if text is None:
        text = yaml.safe_dump(data, sort_keys=False)
    campaign_class = campaign_model()
    try:
        campaign = campaign_class.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(path, err, data=data,
                                                  model=campaign_class)) from None
    cls = _adapter_config_class(campaign.model.get("adapter"), path)
    try:
        model = cls.model_validate(campaign.model)
    except ValidationError as err:
        # a Config whose keys depend on another key (the executable adapter's `launcher`)
        # says which union validated it, so an unknown key gets its spelling suggested
        schema = cls.section_type() if hasattr(cls, "section_type") else cls
        raise ConfigError(format_validation_error(path, err, "model", data=campaign.model,
                                                  model=schema)) from None
    loaded = LoadedCampaign(campaign, model, path, text, base_dir)
    if loaded.n_steps < 1:
        raise ConfigError(f"{path}: key tams.horizon: T/dt = {campaign.tams.horizon}/{model.dt} "
                          "rounds to 0 steps; make the horizon at least one time step.")
    if abs(loaded.n_steps * model.dt - campaign.tams.horizon) > 1e-9 * campaign.tams.horizon:
        raise ConfigError(f"{path}: key tams.horizon: {campaign.tams.horizon} is not a whole "
                          f"number of time steps of {model.dt}; use e.g. {loaded.n_steps * model.dt!r}.")
    _check_algorithm(loaded)
    return loaded


def _check_algorithm(loaded: LoadedCampaign) -> None:
    """The cross-section rules of the algorithm keys (one sentence each)."""
    c, path = loaded.campaign, loaded.path
    if c.algorithm == "gklt":
        g = c.gklt
        if g is None:
            raise ConfigError(f"{path}: key gklt: is required with `algorithm: gklt`; add a "
                              "section with k, observable, resample_every and threshold.")
        names = [o.name for o in loaded.model.observable_specs()]
        if g.observable not in names:
            raise ConfigError(f"{path}: key gklt.observable: {g.observable!r} is not an "
                              f"observable of the model; use one of {names}.")
        if g.resample_every > loaded.n_steps:
            raise ConfigError(f"{path}: key gklt.resample_every: {g.resample_every} steps is "
                              f"longer than the horizon ({loaded.n_steps} steps); make it at "
                              "most the horizon.")
        if c.score.score_a is not None:
            raise ConfigError(f"{path}: key score.score_a: GKLT runs every trajectory to the "
                              "horizon; remove score_a (it is for tams and montecarlo).")
    elif c.gklt is not None:
        raise ConfigError(f"{path}: key gklt: is the section of `algorithm: gklt`, but "
                          f"algorithm is {c.algorithm}; set `algorithm: gklt` or remove it.")
