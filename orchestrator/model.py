"""The forward-model contract (DESIGN §6).

A legacy code is started once per *segment* and runs many steps, so the contract is
segment-level: the orchestrator sends a :class:`SegmentRequest` and gets back a
:class:`SegmentResult`.  Every message that crosses the boundary between the driver and a
worker is one of the frozen dataclasses below, so it pickles cheaply and cannot be mutated
behind the driver's back.

The orchestrator never opens a state file: a :class:`StateRef` is only kept, linked and
(eventually) deleted.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np

NoiseMode = Literal["file", "seed"]


@dataclass(frozen=True)
class StateRef:
    """A model state on disk: a path, plus an index when one file holds many states."""

    path: str
    index: int = -1


@dataclass(frozen=True)
class Provenance:
    """Where and how a segment ran; recorded per segment in the database."""

    host: str = ""
    pid: int = 0
    slurm_job_id: str = ""
    image_digest: str = ""
    launcher: str = ""


@dataclass(frozen=True)
class SegmentRequest:
    """One model run: advance from ``start`` (state at ``step0``) for ``n_steps`` steps.

    ``noise`` holds the standard-normal noise of steps ``step0+1 .. step0+n_steps``
    (shape ``(n_steps, noise_dim)``) in ``file`` mode: an array, or the driver's
    :class:`~orchestrator.core.noise.NoisePlan`, which acts as one (``np.asarray(noise)``,
    ``noise[i]``) and is drawn where it is first used; ``seed`` is the segment's integer
    seed in ``seed`` mode.  ``workdir`` is a fresh directory that belongs to this segment
    alone; its path is a pure function of (replica, trajectory, step0), so a resumed driver
    finds a finished segment's outputs there and ingests them instead of re-running it.

    ``trajectory``: a path (no file of that name exists) naming the segment's trajectory,
    ``.../rRRRR/tNNNNNNN``, set by the driver.  An adapter that keeps all of a trajectory's
    states in one file (the python adapter: ``<trajectory>.f64``) names it from this; the
    driver deletes the files it registered when the trajectory is forgotten.  ``None`` (a
    request made by hand, ``tams check``): the segment stands alone.
    """

    workdir: str
    start: StateRef | None
    step0: int
    n_steps: int
    dt: float
    checkpoint_every: int
    noise: Any = None  # np.ndarray or NoisePlan (array-like)
    seed: int | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    timeout: float | None = None
    trajectory: str | None = None

    @property
    def t0(self) -> float:
        return self.step0 * self.dt

    def promised_checkpoints(self) -> np.ndarray:
        """Steps at which the model must leave a checkpoint: every ``checkpoint_every``
        steps (counted from step 0, not from ``step0``) and at the segment's last step."""
        last = self.step0 + self.n_steps
        every = max(1, int(self.checkpoint_every))
        first = (self.step0 // every + 1) * every
        steps = np.arange(first, last + 1, every, dtype=np.int64)
        if steps.size == 0 or steps[-1] != last:
            steps = np.append(steps, np.int64(last))
        return steps


@dataclass(frozen=True)
class Checkpoints:
    """Checkpoints written by one segment, columnar so that thousands cost no objects.

    ``files[file_of[i]]`` holds the state at ``steps[i]``, at ``index[i]`` inside the file
    (``-1`` when the file holds a single state).
    """

    steps: np.ndarray
    file_of: np.ndarray
    index: np.ndarray
    files: tuple[str, ...]

    def ref(self, i: int) -> StateRef:
        return StateRef(self.files[int(self.file_of[i])], int(self.index[i]))

    @staticmethod
    def empty() -> Checkpoints:
        z = np.zeros(0, dtype=np.int64)
        return Checkpoints(z, z, z, ())


@dataclass(frozen=True)
class SegmentResult:
    """What a segment produced: the observables of every step and its checkpoints."""

    steps: np.ndarray  # int64 (n,) = step0+1 .. step0+n
    observables: np.ndarray  # float64 (n, n_observables)
    checkpoints: Checkpoints
    wall_time: float = 0.0
    model_time: float = 0.0  # seconds inside the model proper (e.g. the step function)
    provenance: Provenance = field(default_factory=Provenance)
    attempts: int = 1
    reused: bool = False  # True when ingested from a finished directory found on disk


class ModelRunError(RuntimeError):
    """A model run failed or returned something the protocol forbids.

    The message names the segment directory (kept for inspection), the exit code and the
    tail of stderr, so the user can go and look.
    """

    def __init__(self, message: str, workdir: str = "", exit_code: int | None = None,
                 stderr_tail: str = "", transient: bool = True):
        super().__init__(message)
        self.workdir = workdir
        self.exit_code = exit_code
        self.stderr_tail = stderr_tail
        self.transient = transient

    def __reduce__(self):  # keep the fields across process boundaries (Parsl pickles)
        return (ModelRunError, (str(self), self.workdir, self.exit_code, self.stderr_tail,
                                self.transient))


class ForwardModel(abc.ABC):
    """The ABC every adapter implements (DESIGN §6).

    Adapters are built from the campaign's ``model`` section by :meth:`from_config`, in
    the driver *and* again inside each worker, so they must be cheap to build and must keep
    no state between segments other than caches.
    """

    #: the pydantic model validating this adapter's ``model`` section (strict)
    Config: ClassVar[type]
    noise_mode: NoiseMode = "file"

    @classmethod
    @abc.abstractmethod
    def from_config(cls, config: Any, base_dir: str) -> ForwardModel:
        """Build the adapter from its validated config section; ``base_dir`` is the
        directory of the campaign YAML (relative input paths are resolved against it)."""

    @abc.abstractmethod
    def initial_state(self, workdir: str) -> StateRef | None:
        """The state at step 0, or ``None`` when the model makes its own initial state."""

    @abc.abstractmethod
    def run_segment(self, request: SegmentRequest) -> SegmentResult:
        """Run one segment; raise :class:`ModelRunError` on any failure."""

    def collect(self, request: SegmentRequest) -> SegmentResult | None:
        """Return the result of a segment already finished in ``request.workdir`` (found on
        disk after a driver crash), or ``None`` when it must be (re-)run."""
        return None

    def state_bytes(self, ref: StateRef) -> bytes | None:
        """The bytes of one state, for an adapter whose files hold several states in a layout
        of its own (``tams check`` compares states byte for byte); ``None`` (the default): the
        checker compares the whole file, or the row of a ``.npy`` file."""
        return None

    def shutdown(self) -> None:
        """Kill whatever this model started that is still running (driver shutdown)."""
        return None  # the default for a model that starts nothing; not abstract on purpose

    def check(self) -> list[str]:
        """Cheap static checks (executable present, image exists...): a list of problems,
        each one clear sentence.  Called by the driver before anything is written."""
        return []
