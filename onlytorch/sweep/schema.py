"""The sweep file's schema: these pydantic models ARE the sweep language. The JSON Schema
(``onlytorch schema --sweep``) and the key tables of docs/sweeps.md are generated from them.

The models check types and keys only. What needs the base spec (paths, metrics) or reads better
under its own code (a distribution's kind and bounds: E-SWEEP-SPACE, E-SWEEP-BOUNDS) is checked by
``onlytorch.sweep.load``, which locates every problem in the file."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ..safe_files import short_repr
from ..spec.numbers import exact_int_problem
from ..spec.schema import RUN_NAME, MonitorSpec, Strict

MAX_SEEDS = 1000  # seeds a trial runs: each is a whole training run
MAX_TRIALS = 1_000_000

KINDS = ("loguniform", "uniform", "int", "choice")  # the distribution kinds, in the order the docs list them

SAMPLERS = ("tpe", "random", "grid", "cmaes")
PRUNERS = ("none", "median", "successive_halving")


def _pair(item: str) -> dict[str, Any]:
    """The JSON Schema of a [low, high] pair (the models leave the pair's checks to the loader's codes)."""
    return {"anyOf": [{"type": "array", "items": {"type": item}, "minItems": 2, "maxItems": 2}, {"type": "null"}]}


class DistributionSpec(Strict):
    """One entry of ``space``: exactly one of ``loguniform``, ``uniform``, ``int`` or ``choice``, with
    ``step`` or ``log`` where they apply. Bounds are inclusive."""

    loguniform: list[float] | None = Field(
        None,
        description="[low, high]: a float drawn uniformly in log space; 0 < low < high",
        json_schema_extra=_pair("number"),
    )
    uniform: list[float] | None = Field(
        None, description="[low, high]: a float drawn uniformly; low < high", json_schema_extra=_pair("number")
    )
    # floats, not ints: a bound like 8.5 is the loader's E-SWEEP-BOUNDS (with the range), not a bare E-TYPE
    int_: list[float] | None = Field(
        None,
        alias="int",
        description="[low, high]: an integer, low <= value <= high (both integers, low < high)",
        json_schema_extra=_pair("integer"),
    )
    choice: list[Any] | None = Field(
        None,
        description="the values to choose from: numbers, strings, booleans, null, or lists and mappings (e.g. "
        "betas pairs); at least one",
    )
    step: float | None = Field(
        None,
        json_schema_extra={"anyOf": [{"type": "number", "exclusiveMinimum": 0}, {"type": "null"}]},
        description="uniform or int: the grid the value lies on (low, low + step, ...); high - low must be a "
        "multiple of it",
    )
    log: bool | None = Field(
        None, description="int: draw in log space (1 <= low; not with step); loguniform is always log"
    )

    @field_validator("loguniform", "uniform", "int_", mode="before")
    @classmethod
    def _no_booleans(cls, v: Any) -> Any:
        # pydantic would read true as 1.0: a bound written as a boolean is a slip
        if isinstance(v, list):
            bad = next((i for i, x in enumerate(v) if isinstance(x, bool)), None)
            if bad is not None:
                raise ValueError(f"item {bad}: a bound must be a number, not {str(v[bad]).lower()}")
        return v


class SamplerSpec(Strict):
    """How Optuna chooses the next trial's parameters: TPE (the default), random search, an exhaustive
    grid (every space entry must be discrete: int, choice, or uniform with a step) or CMA-ES."""

    type: Literal["tpe", "random", "grid", "cmaes"] = Field("tpe", description="the Optuna sampler")
    seed: int = Field(
        0,
        ge=0,
        description="seeds the sampler (each local worker derives its own seed from it, so workers do not repeat "
        "each other)",
    )
    n_startup_trials: int | None = Field(
        None,
        ge=0,
        description="tpe and cmaes: random trials before the model takes over (default: Optuna's, 10 for tpe, 1 "
        "for cmaes)",
    )

    @model_validator(mode="after")
    def _options(self) -> SamplerSpec:
        if self.n_startup_trials is not None and self.type not in ("tpe", "cmaes"):
            raise ValueError(f"n_startup_trials applies to the tpe and cmaes samplers, not to {self.type}")
        return self


class PrunerSpec(Strict):
    """What stops unpromising trials early, fed from the trainer's periodic evaluations
    (``train.eval_every`` of the base spec) of the monitored metric."""

    type: Literal["none", "median", "successive_halving"] = Field("none", description="the Optuna pruner")
    startup_trials: int | None = Field(
        None, ge=0, description="median: trials that finish before any is pruned (default 5)"
    )
    warmup_steps: int | None = Field(
        None, ge=0, description="median: training steps of a trial before it may be pruned (default 0)"
    )
    min_resource: int | Literal["auto"] | None = Field(
        None,
        description="successive_halving: steps a trial runs before its first comparison (default auto: "
        "estimated from the first trials)",
    )
    reduction_factor: int | None = Field(
        None, ge=2, description="successive_halving: the share (1/factor) of trials kept at each rung (default 4)"
    )

    @field_validator("min_resource")
    @classmethod
    def _resource(cls, v: Any) -> Any:
        if isinstance(v, int) and v <= 0:
            raise ValueError(f"min_resource must be a positive number of steps or auto, got {v}")
        return v

    @model_validator(mode="after")
    def _options(self) -> PrunerSpec:
        owners = {
            "startup_trials": "median",
            "warmup_steps": "median",
            "min_resource": "successive_halving",
            "reduction_factor": "successive_halving",
        }
        wrong = [k for k, owner in owners.items() if getattr(self, k) is not None and owner != self.type]
        if wrong:
            users = sorted({owners[k] for k in wrong})
            raise ValueError(
                f"{', '.join(wrong)} {'applies' if len(wrong) == 1 else 'apply'} to the {' and '.join(users)} "
                f"pruner, not to type {self.type}"
            )
        return self

    def options(self) -> dict[str, Any]:
        """type and the options of that type, with the defaults filled in (what identity() records)."""
        if self.type == "median":
            return {
                "type": "median",
                "startup_trials": 5 if self.startup_trials is None else self.startup_trials,
                "warmup_steps": self.warmup_steps or 0,
            }
        if self.type == "successive_halving":
            return {
                "type": "successive_halving",
                "min_resource": self.min_resource or "auto",
                "reduction_factor": self.reduction_factor or 4,
            }
        return {"type": "none"}


class SweepSpec(Strict):
    """A sweep or a seed study over one base spec."""

    version: Literal[1] = Field(description="the sweep file language version")
    name: str | None = Field(
        None,
        description="the sweep's name, and its directory sweeps/NAME: 1 to 100 letters, digits, '.', '_' or '-', "
        "starting with a letter or digit; default: the file's name without .yaml",
    )
    description: str | None = Field(None, description="what the sweep is for")
    spec: str = Field(
        description="the base spec, a path relative to this file's folder (it may lie outside that folder)"
    )
    set_: dict[str, Any] = Field(
        default_factory=dict,
        alias="set",
        description="fixed overrides for every trial: dotted paths into the base spec, as `--set` takes them "
        "(train.steps: 3000)",
    )
    monitor: MonitorSpec | None = Field(
        None,
        description="the metric to optimise, as the spec's train.monitor (metric, split, mode); default: the base "
        "spec's monitor. It is also what chooses each run's best.npz",
    )
    objective: Literal["best", "final"] = Field(
        "best",
        description="a run's value: best, the best evaluation of the monitored metric (run.json's best); final, "
        "its value at the final evaluation",
    )
    trials: int | None = Field(
        None,
        gt=0,
        le=MAX_TRIALS,
        description="trials to finish (complete or pruned); required with a space (with the grid sampler, default: "
        "the grid's size); a seed study runs 1",
    )
    seeds: int | list[int] | None = Field(
        None,
        description=f"the seeds every trial runs (its value is the mean over them): K for 0..K-1, or a list of "
        f"distinct seeds; at most {MAX_SEEDS}; default: the base spec's seed",
    )
    sampler: SamplerSpec = Field(
        default_factory=lambda: SamplerSpec.model_validate({}), description="the Optuna sampler"
    )
    pruner: PrunerSpec = Field(default_factory=lambda: PrunerSpec.model_validate({}), description="the Optuna pruner")
    max_failures: int | None = Field(
        None, gt=0, description="stop (exit 1) once this many trials have failed; default: trials"
    )
    space: dict[str, DistributionSpec] = Field(
        default_factory=dict,
        description="the search space: dotted paths into the base spec, as `--set` takes them, each with a "
        "distribution; empty for a seed study",
    )

    @field_validator("name")
    @classmethod
    def _run_name(cls, v: str | None) -> str | None:
        if v is not None and not RUN_NAME.match(v):
            raise ValueError(
                f"{short_repr(v)} is not a valid sweep name: it becomes the directory sweeps/NAME, so it must be 1 "
                "to 100 letters, digits, '.', '_' or '-', starting with a letter or digit"
            )
        return v

    @field_validator("seeds", mode="before")
    @classmethod
    def _seeds(cls, v: Any) -> Any:
        if isinstance(v, list):
            for i, s in enumerate(v):
                problem = exact_int_problem(s)
                if problem:
                    raise ValueError(f"seed {i}: {problem}")
                if s < 0:
                    raise ValueError(f"seed {i}: a seed is at least 0, got {s}")
            if not v:
                raise ValueError("give at least one seed (or leave seeds out: the base spec's seed)")
            if len(v) > MAX_SEEDS:
                raise ValueError(f"at most {MAX_SEEDS} seeds, got {len(v)}")
            twice = sorted({s for s in v if v.count(s) > 1})
            if twice:
                raise ValueError(f"seed {', '.join(map(str, twice))} appear{'s' if len(twice) == 1 else ''} twice")
            return v
        problem = exact_int_problem(v) if v is not None else None
        if problem:
            raise ValueError(f"an integer K (seeds 0..K-1) or a list of seeds; {problem}")
        if isinstance(v, int) and not 0 < v <= MAX_SEEDS:
            raise ValueError(f"K (seeds 0..K-1) must be between 1 and {MAX_SEEDS}, got {v}")
        return v


def json_schema() -> dict[str, Any]:
    """The sweep file's JSON Schema (``onlytorch schema --sweep``)."""
    schema = SweepSpec.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "onlytorch sweep"
    return schema
