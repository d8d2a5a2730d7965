"""The schema of a backward's ``weight``: a number, or a schedule of the iteration (the engine side is
onlytorch/optim/weights.py). The schedules are the weights' own ``linear`` ramp and the closed-form
learning-rate schedules, their fields read from the same ``hypers`` tables, plus ``value`` (the
weight an lr-style schedule scales). One tagged union holds the number and the schedules, so that a
mistake is one located diagnostic, not one per member of the union. schema.py builds the field
from here and rebuilds it when a schedule is registered."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, Discriminator, Field, Tag, create_model
from pydantic.fields import FieldInfo

from ..safe_files import short_repr
from .numbers import float_problem

NUMBER_TAG = "a number"  # the union's tag for a plain number (no schedule's type reads so)

DESCRIPTION = (
    "a factor on the loss: a number, or a schedule evaluated at each iteration (the trainer's step before it "
    "runs): {type: linear, start: 0.0, end: 1.0, steps: 2000} (optional begin: the iteration the ramp starts), "
    "or a learning-rate schedule's type and keys with value: the weight it scales (default 1.0), e.g. "
    "{type: cosine_annealing_lr, value: 0.5, T_max: 1000}"
)


def schedule_models(
    base: type[BaseModel], hyper_fields: Callable[[Any], dict[str, Any]], doc: Callable[[type, str], str]
) -> dict[str, type[BaseModel]]:
    """A model per weight schedule: ``type``, ``value`` for the lr-style ones, then the schedule's
    hyper-parameters (``hyper_fields``: the schema's own reading of a ``hypers`` table)."""
    from ..optim.weights import VALUE, takes_value, weight_schedules

    models: dict[str, type[BaseModel]] = {}
    for name, cls in weight_schedules().items():
        value: dict[str, Any] = (
            {VALUE: (float, Field(1.0, description="the weight the schedule scales (as it scales a base lr)"))}
            if takes_value(cls)
            else {}
        )
        models[name] = create_model(
            "WeightSchedule_" + name,
            __base__=base,
            __doc__=doc(cls, name),
            type=(Literal[name], Field(description="the schedule")),  # type: ignore[valid-type, arg-type]
            **value,
            **hyper_fields(cls),
        )
    return models


def _tag(v: Any) -> str | None:
    if isinstance(v, dict):
        kind = v.get("type")
        return kind if isinstance(kind, str) else None
    if isinstance(v, BaseModel):
        return getattr(v, "type", None)
    return NUMBER_TAG


def union(models: dict[str, type[BaseModel]]) -> Any:
    """The field's type: a number or one of the schedule models, told apart by ``type``."""
    members = (Annotated[float, Tag(NUMBER_TAG)], *(Annotated[m, Tag(k)] for k, m in models.items()))
    return Annotated[Union[members], Discriminator(_tag)]  # noqa: UP007


def checked_number(v: Any) -> Any:
    """The field's first check: a mapping goes on to the schedules; anything else must be a number
    (not true, nor a word), said in the language's words rather than pydantic's."""
    if isinstance(v, (dict, BaseModel)):
        return v
    problem = float_problem(v)
    if problem is None and not isinstance(v, (int, float)):
        try:
            float(v)
        except (TypeError, ValueError):
            problem = f"must be a number or a schedule ({{type: linear, steps: N}}, ...), got {short_repr(v)}"
    if problem:
        raise ValueError(problem)
    return v


def follow(
    models: dict[str, type[BaseModel]], fresh: dict[str, type[BaseModel]], holders: Iterable[type[BaseModel]]
) -> None:
    """After ``optim.register``/``unregister``: the schedule models rebuilt (in the same dict), the
    first holder's ``weight`` field retyped, and every holder (each holding the one before it) rebuilt."""
    models.clear()
    models.update(fresh)
    holders = list(holders)
    old = holders[0].model_fields["weight"]
    holders[0].model_fields["weight"] = FieldInfo.from_annotated_attribute(
        union(models), Field(old.default, description=old.description)
    )
    for model in holders:
        model.model_rebuild(force=True)


def listen(callback: Callable[[], None]) -> None:
    from ..optim import on_registry_change

    on_registry_change(callback)
