"""The spec's ``logging:`` key: the experiment trackers a run mirrors its metrics to (onlytorch/tracking/).

It says nothing of what a run computes: left out at its defaults it is not in the resolved spec
(a spec without it, or with ``tensorboard: true`` alone, keeps its resolved-spec hash, so runs
trained before it existed still resume), and onlytorch/run.py lets it change between a run and
its resume."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer


class _Strict(BaseModel):
    # schema.Strict's config (schema.py imports this module, so it cannot be imported from there)
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class MlflowSpec(_Strict):
    """One MLflow run per training run (a resume continues it): the resolved spec as parameters,
    the metrics with their steps, the report and best.npz as artifacts, and the final status."""

    tracking_uri: str = Field(
        min_length=1,
        description="the MLflow tracking URI, e.g. sqlite:///mlflow.db or http://localhost:5000 (needs the mlflow "
        "extra)",
    )
    experiment: str | None = Field(None, description="the MLflow experiment; default: the spec's name")
    run_name: str | None = Field(None, description="the MLflow run's name; default: the run directory's name")


class LoggingSpec(_Strict):
    """Where a run's metrics are mirrored besides metrics.jsonl (see docs/runs.md)."""

    tensorboard: bool = Field(
        True,
        description="write TensorBoard event files in RUN_DIR/tensorboard/ (when tensorboardX is installed: the "
        "tensorboard extra); false: none",
    )
    mlflow: MlflowSpec | None = Field(None, description="log the run to MLflow (as --mlflow URI)")

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> Any:
        # the default is left out of the resolved spec, so that it hashes as a spec without the key
        data = handler(self)
        if isinstance(data, dict) and data.get("tensorboard") is True:
            del data["tensorboard"]
        return data

    def tensorboard_asked(self) -> bool:
        """Whether the spec says ``tensorboard: true`` itself (then a missing tensorboardX is an error)."""
        return "tensorboard" in self.model_fields_set and self.tensorboard
