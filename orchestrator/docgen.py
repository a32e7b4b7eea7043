"""Generate ``docs/configuration.md`` from the pydantic models, so the reference cannot drift.

    python -m orchestrator.docgen > docs/configuration.md

Every key of every section (the campaign's own models in :mod:`orchestrator.config`, each
runner kind, each adapter's ``Config`` and each launcher's section, found through the
registry) becomes a row ``key | type | default | description``; the description is the
``Field``'s.  Only this project's own entry points are documented (the built-ins), whatever
plug-ins are installed, so the reference is the same on every machine.
``tests/test_docs.py`` checks that the committed file equals this function's output.
"""
from __future__ import annotations

import re
import sys
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from orchestrator.config import (
    DatabaseSection,
    GkltSection,
    ModelSection,
    Observable,
    RunnerSection,
    ScoreSection,
    SlurmSection,
    TamsSection,
    campaign_model,
)
from orchestrator.registry import ADAPTERS, LAUNCHERS, RUNNERS, adapter_class

EXAMPLE = Path(__file__).resolve().parent.parent / "configs" / "doublewell2d.yaml"

Campaign = campaign_model()  # the validating class: its runner row says `mapping`


def runner_kinds() -> list[tuple[str, type[RunnerSection]]]:
    """(name, class) of this project's own runner kinds, the default first."""
    kinds = RunnerSection.variants()
    default = RunnerSection.model_fields["kind"].default
    names = sorted(RUNNERS.builtin_names(), key=lambda n: (n != default, n))
    return [(name, kinds[name]) for name in names]


# the campaign's sections, in the order of the reference: (YAML key, model)
SECTIONS: list[tuple[str, type[BaseModel]]] = [
    ("score", ScoreSection),
    ("tams", TamsSection),
    ("gklt", GkltSection),
    ("runner", RunnerSection),
    *((f"runner with kind: {name}", cls) for name, cls in runner_kinds()),
    ("runner.slurm", SlurmSection),
    ("database", DatabaseSection),
]


def adapter_configs() -> list[tuple[str, type[ModelSection]]]:
    """(name, Config) of every adapter this project registers itself (its entry points).
    Third-party entry points are left out: the reference documents this project, whatever
    else is installed."""
    return [(name, adapter_class(name).Config) for name in ADAPTERS.builtin_names()]


def launcher_variants(cfg: type[BaseModel]) -> list[tuple[str, type[BaseModel]]]:
    """(launcher, variant) of an adapter Config whose keys depend on its `launcher` (the
    executable adapter's ``variants()``), for this project's own launchers."""
    variants = cfg.variants() if hasattr(cfg, "variants") else {}
    return [(name, variants[name]) for name in LAUNCHERS.builtin_names() if name in variants]


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
    if origin is Annotated:  # e.g. a discriminated union (tagged_union)
        return _type(get_args(tp)[0])
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


def rows(model: type[BaseModel], fields: list[str] | None = None) -> list[str]:
    """The reference rows of ``model``'s fields (all, or just ``fields``)."""
    out = []
    for name, field in model.model_fields.items():
        if fields is not None and name not in fields:
            continue
        if not field.description:
            raise ValueError(f"{model.__name__}.{name} has no description; add one to its Field")
        out.append(f"| `{name}` | {_cell(_type(field.annotation))} | {_cell(_default(field))} | "
                   f"{_cell(field.description)} |")
    return out


def table(model: type[BaseModel], fields: list[str] | None = None,
          more: Sequence[str] = ()) -> str:
    """The reference table of ``model``'s fields (all, or just ``fields``), then ``more`` rows."""
    return "\n".join(["| key | type | default | description |", "|---|---|---|---|",
                      *rows(model, fields), *more])


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
validates it and proves on a few steps that the model is deterministic and restarts exactly
(docs/wrapping.md).  The file is read strictly: an unknown key, a value of the wrong type (a
quoted number, a float where an integer is needed) or a value out of range stops `tams`
with one sentence naming the file, the key and the fix, and nothing is written.

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


def _runner_kinds() -> list[str]:
    """The runner kinds: one line each, and a table of the keys a kind adds."""
    out = ["The runner kinds (`runner.kind`):",
           "\n".join(f"- `{name}`: {_doc(cls).split(' — ', 1)[-1]}" for name, cls in runner_kinds())]
    for name, cls in runner_kinds():
        own = [f for f in cls.model_fields if f not in RunnerSection.model_fields]
        if own:
            out += [f"Keys of `kind: {name}` besides the common ones:", table(cls, own)]
    return out


def configuration_markdown() -> str:
    parts = [
        "# Configuration reference",
        ("<!-- Generated by `python -m orchestrator.docgen > docs/configuration.md` from the "
        "pydantic models in orchestrator/config.py and the adapters; do not edit by hand "
        "(tests/test_docs.py checks it). -->"),
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
        # the sections of the launchers (a variant's own fields) are keys of this adapter too
        variants = launcher_variants(cfg)
        sections = [rows(v, [f for f in v.model_fields if f not in cfg.model_fields])
                    for _, v in variants]
        parts += [f"## `model` with `adapter: {name}`", _doc(cfg) + "  Besides the common keys:",
                  table(cfg, own, [r for rs in sections for r in rs])]
        for key, sub in sub_sections(cfg):
            if key in common:
                continue
            parts += [f"### `model.{key}` (adapter `{name}`)", _doc(sub), table(sub)]
        for _, variant in variants:
            for key, sub in sub_sections(variant):
                if key in cfg.model_fields:
                    continue
                parts += [f"### `model.{key}` (adapter `{name}`)", _doc(sub), table(sub)]
    for key, model in SECTIONS:
        if key.startswith("runner with kind: "):
            continue
        parts += [f"## `{key}`", _doc(model), table(model)]
        if key == "runner":
            parts += _runner_kinds()
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
