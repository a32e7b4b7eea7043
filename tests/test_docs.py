"""docs/configuration.md is generated from the models and must not drift from them."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from orchestrator import config
from orchestrator.docgen import (
    EXAMPLE,
    SECTIONS,
    adapter_configs,
    annotated_example,
    configuration_markdown,
    sub_sections,
)

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "configuration.md"
REGENERATE = "python -m orchestrator.docgen > docs/configuration.md"


def all_models() -> list[type[BaseModel]]:
    models = [config.Campaign, config.ModelSection, config.Observable]
    models += [m for _, m in SECTIONS]
    models += [cfg for _, cfg in adapter_configs()]
    models += [sub for _, cfg in adapter_configs() for _, sub in sub_sections(cfg)
               if sub is not config.Observable]
    return models


def test_committed_reference_is_up_to_date():
    assert DOC.read_text() == configuration_markdown(), (
        f"docs/configuration.md is out of date; run `{REGENERATE}` and commit it")


def test_module_entry_point_prints_the_reference():
    out = subprocess.run([sys.executable, "-m", "orchestrator.docgen"], capture_output=True,
                         text=True, check=True, cwd=ROOT).stdout
    assert out == configuration_markdown()


def test_every_section_model_is_documented():
    """Every model that validates a part of the YAML is reached by the generator."""
    seen = set(all_models())
    for model in list(seen):
        for field in model.model_fields.values():
            for t in _models_in(field.annotation):
                assert t in seen, f"{model.__name__}.{field} uses {t.__name__}, not documented"


def _models_in(tp):
    from typing import get_args
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        yield tp
    for a in get_args(tp):
        yield from _models_in(a)


@pytest.mark.parametrize("model", all_models(), ids=lambda m: m.__name__)
def test_every_field_has_a_row_and_a_description(model):
    text = DOC.read_text()
    for name, field in model.model_fields.items():
        assert field.description, f"{model.__name__}.{name} has no description"
        assert re.search(rf"^\| `{name}` \|", text, re.M), (
            f"{model.__name__}.{name} has no row in docs/configuration.md")


def test_every_adapter_has_a_section():
    text = DOC.read_text()
    for name, _ in adapter_configs():
        assert f"## `model` with `adapter: {name}`" in text


def test_annotated_example_is_the_example_campaign():
    """The comments added to the example change nothing: it is the same, valid campaign."""
    assert yaml.safe_load(annotated_example()) == yaml.safe_load(EXAMPLE.read_text())
    config.load(EXAMPLE)
