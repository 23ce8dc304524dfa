"""The components' setting parameters get their defaults and descriptions from where each setting is declared.

A KFP lightweight component ships the source of its function, and the executor reads that function's annotations,
so a component lists each parameter with its type. Defaults and meanings are not typed again: ``settings_from``
fills in the defaults of the keyword-only parameters (``__kwdefaults__``; KFP reads them through
``inspect.signature`` into the component spec, and Python uses them when the function is called directly) and adds
their descriptions to the docstring's Args, taken from

* the stage config dataclass (``actionclip.train.config``): its field defaults and the fields' comments;
* the library function the component wraps: its keyword defaults (a ``None`` there is the parameter type's empty
  value, "" or []);
* ``WIRING``: the parameters that wire a stage into the pipeline, the same for every stage.

At run time every input arrives from the spec, where these defaults already stand, so the shipped source needs none.
Imported where the components are defined (never inside a component body).
"""
from __future__ import annotations

import dataclasses
import inspect
import typing
from typing import Any, Callable, Mapping, TypeVar

from kfp import dsl

from actionclip.train.config import field_help

F = TypeVar("F", bound=Callable[..., Any])

# name -> (default, description); "{config}" in a description is the stage config's class name
WIRING: dict[str, tuple[Any, str]] = {
    "parent_run_id": ("", "MLflow run to nest this stage's run under (the pipeline's parent run)."),
    "overrides": ({}, "other {config} fields, e.g. {\"precision\": \"bf16\"} (not the fields the pipeline wires)."),
    "work_root": ("", "shared directory for resumable stage checkpoints (empty: a temporary directory)."),
    "job_name": (dsl.PIPELINE_JOB_NAME_PLACEHOLDER, "the KFP job name (filled in by KFP); tagged for lineage."),
    # The run's UUID, not its name: display names repeat, and a stage must never resume another run's checkpoint.
    "job_id": (dsl.PIPELINE_JOB_ID_PLACEHOLDER,
               "the KFP run's unique id (filled in by KFP); keys the stage's folder under work_root."),
}


def settings_from(*sources: Any, names: Mapping[str, str] | None = None, help: Mapping[str, str] | None = None,
                  **own: tuple[Any, str]) -> Callable[[F], F]:
    """Decorator (under ``@dsl.component``) giving every keyword-only parameter its default and description.

    ``sources``: stage config classes and library functions, searched in order; ``names``: parameter -> the name
    it has there, where they differ; ``help``: descriptions of parameters whose source (a function) has none;
    ``own``: parameter -> (default, description) for the component's own settings.
    A parameter found nowhere is an error at import time, so a new setting cannot go without a declared default.
    """
    names = dict(names or {})

    def apply(func: F) -> F:
        hints = typing.get_type_hints(func)
        config = next((s.__name__ for s in sources if isinstance(s, type)), "config")
        defaults: dict[str, Any] = {}
        described: list[str] = []
        for p in inspect.signature(func).parameters.values():
            if p.kind is not p.KEYWORD_ONLY:
                continue
            default, text = _lookup(p.name, names.get(p.name, p.name), sources, own)
            text = text or (help or {}).get(p.name, "")
            defaults[p.name] = _empty(hints[p.name]) if default is None else default
            if text:
                described.append(f"{p.name}: {text.replace('{config}', config)}")
        func.__kwdefaults__ = defaults
        func.__doc__ = _add_args(inspect.getdoc(func) or "", described)
        return func

    return apply


def _lookup(param: str, name: str, sources: tuple[Any, ...], own: Mapping[str, tuple[Any, str]]) -> tuple[Any, str]:
    if param in own:
        return own[param]
    if param in WIRING:
        return WIRING[param]
    for source in sources:
        if isinstance(source, type) and dataclasses.is_dataclass(source):
            values = dataclasses.asdict(source())
            if name in values:
                return values[name], field_help(source).get(name, "")
        else:
            p = inspect.signature(source).parameters.get(name)
            if p is not None and p.default is not p.empty:
                return p.default, ""
    raise TypeError(f"component parameter {param!r} has no declared default (not in {[_name(s) for s in sources]})")


def _name(source: Any) -> str:
    return getattr(source, "__qualname__", repr(source))


def _empty(tp: Any) -> Any:
    """The empty value a KFP parameter of type ``tp`` takes where the library's default is None."""
    if typing.get_origin(tp) in (list, typing.List) or tp is list:
        return []
    if tp is str:
        return ""
    raise TypeError(f"no empty value for a {tp} parameter")


def _add_args(doc: str, lines: list[str]) -> str:
    """``doc`` with ``lines`` appended to its Args section (before Returns, when there is one)."""
    if not lines:
        return doc
    block = "".join(f"\n    {line}" for line in lines)
    head, sep, tail = doc.partition("\n\nReturns:")
    if "Args:" not in head:
        head += "\n\nArgs:"
    return head + block + sep + tail
