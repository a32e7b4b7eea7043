"""Generate ``docs/configuration.md`` from the pydantic models, so the reference cannot drift.

    python -m orchestrator.docgen > docs/configuration.md

Every key of every section (the campaign's own models in :mod:`orchestrator.config` and each
adapter's ``Config``, found through the adapter table) becomes a row ``key | type | default |
description``; the description is the ``Field``'s.  ``tests/test_docs.py`` checks that the
committed file equals this function's output.
"""
from __future__ import annotations

import re
import sys
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from orchestrator.config import (Campaign, DatabaseSection, ModelSection, Observable, RunnerSection,
                     ScoreSection, SlurmSection, TamsSection)

EXAMPLE = Path(__file__).resolve().parent.parent / "configs" / "doublewell2d.yaml"

# the campaign's sections, in the order of the reference: (YAML key, model)
SECTIONS: list[tuple[str, type[BaseModel]]] = [
    ("score", ScoreSection),
    ("tams", TamsSection),
    ("runner", RunnerSection),
    ("runner.slurm", SlurmSection),
    ("database", DatabaseSection),
]


def adapter_configs() -> list[tuple[str, type[ModelSection]]]:
    """(name, Config) of every adapter in the project's own table (``adapters.ADAPTERS``),
    resolved through the registry.  Third-party entry points are left out: the reference
    documents this project, whatever else is installed."""
    import adapters
    from orchestrator.registry import adapter_class
    return [(name, adapter_class(name).Config) for name in sorted(adapters.ADAPTERS)]


def sub_sections(model: type[BaseModel]) -> list[tuple[str, type[BaseModel]]]:
    """(key, model) of each field of ``model`` that is itself a section (e.g. `model.docker`)."""
    out = []
    for name, field in model.model_fields.items():
        tp = field.annotation
        for t in (tp, *get_args(tp)):
            if isinstance(t, type) and issubclass(t, BaseModel):
                out.append((name, t))
                break
    return out


# --- rendering one field ---------------------------------------------------------------------
def _type(tp: Any) -> str:
    if tp is type(None):
        return "null"
    if tp is Any:
        return "any"
    if tp in (bool, int, float, str):
        return {bool: "boolean", int: "integer", float: "number", str: "string"}[tp]
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(f"`{a}`" for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(dict.fromkeys(_type(a) for a in get_args(tp)))
    if origin is list:
        (item,) = get_args(tp)
        inner = _type(item)
        return f"list of {'(' + inner + ')' if ' or ' in inner else inner + 's'}"
    if origin is dict:
        return "mapping"
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _scalar(v: Any) -> str:
    if v is None:
        return "`null`"
    if isinstance(v, bool):
        return f"`{str(v).lower()}`"
    if isinstance(v, str):
        return f'`"{v}"`' if v == "" else f"`{v}`"
    return f"`{v!r}`"


def _default(field) -> str:
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    if "doc_default" in extra:
        return str(extra["doc_default"])
    if field.is_required():
        return "**required**"
    factory = field.default_factory
    if factory is not None:
        if factory is dict:
            return "`{}`"
        if factory is list:
            return "`[]`"
        if isinstance(factory, type) and issubclass(factory, BaseModel):
            return "its defaults"
        raise ValueError(f"give field {field!r} a json_schema_extra doc_default")
    return _scalar(field.default if field.default is not PydanticUndefined else None)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def table(model: type[BaseModel], fields: list[str] | None = None) -> str:
    """The reference table of ``model``'s fields (all, or just ``fields``)."""
    rows = ["| key | type | default | description |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        if fields is not None and name not in fields:
            continue
        if not field.description:
            raise ValueError(f"{model.__name__}.{name} has no description; add one to its Field")
        rows.append(f"| `{name}` | {_cell(_type(field.annotation))} | {_cell(_default(field))} | "
                    f"{_cell(field.description)} |")
    return "\n".join(rows)


def _doc(model: type[BaseModel]) -> str:
    return " ".join((model.__doc__ or "").split())


# --- the annotated example ---------------------------------------------------------------------
def _first_sentence(text: str) -> str:
    text = " ".join(text.replace("`", "").split())
    return re.split(r"(?<=[a-z0-9)\]])\. ", text, maxsplit=1)[0].rstrip(".")


def annotated_example(path: Path = EXAMPLE) -> str:
    """The example campaign with each key's description (first sentence) as a comment above it."""
    import textwrap

    import yaml
    text = path.read_text()
    data = yaml.safe_load(text)
    configs = dict(adapter_configs())
    section_model = {"": Campaign, "model": configs.get(data["model"]["adapter"], ModelSection),
                     **dict(SECTIONS)}
    out = []
    section = ""
    for line in text.splitlines():
        m = re.match(r"^(\s*)(\w+):", line)
        if not m or "#" in line:
            out.append(line)
            continue
        indent, key = m.groups()
        if not indent:
            section = ""
        model = section_model.get(section)
        field = model.model_fields.get(key) if model is not None else None
        if not indent and key in section_model:
            section = key
        if field is None or not field.description or len(indent) > 2:
            out.append(line)
            continue
        out += textwrap.wrap(_first_sentence(field.description), width=92,
                             initial_indent=f"{indent}# ", subsequent_indent=f"{indent}# ")
        out.append(line)
    return "\n".join(out)


# --- the whole reference -------------------------------------------------------------------
INTRO = """\
A campaign is one YAML file.  `tams run CAMPAIGN.yaml` runs it, `tams check CAMPAIGN.yaml`
validates it and runs one short segment of the model.  The file is read strictly: an unknown
key, a value of the wrong type (a quoted number, a float where an integer is needed) or a
value out of range stops `tams` with one sentence naming the file, the key and the fix, and
nothing is written.

## Paths

- **Inputs** named in the YAML are relative to the **YAML file's directory**: a state file
  (`model.initial_state`), and the modules of import paths (`model.step`,
  `score.function`, ...): the YAML's directory is searched first, so a model can live in a
  `.py` file beside the campaign.
- **Outputs** are relative to the **current directory**, like any command-line tool's
  output: the database (`database.path`, default `<campaign file stem>.h5`) and the
  directory of segments and states (`database.run_dir`, default the database path with
  `.run` instead of `.h5`).  Missing parent directories are made.

Only `seed`, `replicas`, `model`, `score` and `tams` determine the results; `runner` and
`database` can change between runs, and `tams run` on the same campaign resumes its database.
"""


def configuration_markdown() -> str:
    parts = [
        "# Configuration reference",
        "<!-- Generated by `python -m orchestrator.docgen > docs/configuration.md` from the "
        "pydantic models in orchestrator/config.py and the adapters; do not edit by hand "
        "(tests/test_docs.py checks it). -->",
        INTRO.rstrip(),
        "## Top level",
        _doc(Campaign),
        table(Campaign),
        "## `model`: keys common to every adapter",
        _doc(ModelSection) + "  `model.adapter` chooses the adapter; the adapter's own keys "
        "follow below.",
        table(ModelSection),
        "### Entries of `model.observables`",
        _doc(Observable) + "  An entry is either a name (`amoc`) or a mapping with these keys:",
        table(Observable),
    ]
    common = set(ModelSection.model_fields)
    for name, cfg in adapter_configs():
        own = [f for f in cfg.model_fields if f not in common or f == "adapter"]
        parts += [f"## `model` with `adapter: {name}`", _doc(cfg) + "  Besides the common keys:",
                  table(cfg, own)]
        for key, sub in sub_sections(cfg):
            if key in common:
                continue
            parts += [f"### `model.{key}` (adapter `{name}`)", _doc(sub), table(sub)]
    for key, model in SECTIONS:
        parts += [f"## `{key}`", _doc(model), table(model)]
    parts += [
        "## A complete example",
        f"`configs/{EXAMPLE.name}`, with each key's description added as a comment:",
        "```yaml\n" + annotated_example() + "\n```",
    ]
    return "\n\n".join(p for p in parts if p) + "\n"


def main() -> int:
    sys.stdout.write(configuration_markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
