"""Modules built from the official recipe hyper-parameters have exactly the published state-dict keys/shapes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from stepaudio.cosyvoice import build_from_recipe, parse_recipe
from stepaudio.testing.cosyvoice_fixture import OFFICIAL_HPARAMS, recipe_text

MANIFEST = Path(__file__).resolve().parents[2] / "shared" / "reference" / "cosyvoice_25hz_state_dict.json"


@pytest.fixture(scope="module")
def official_modules():
    with torch.device("meta"):
        return build_from_recipe(parse_recipe(recipe_text(OFFICIAL_HPARAMS, label="official size")))


@pytest.fixture(scope="module")
def manifest() -> dict:
    if not MANIFEST.is_file():
        pytest.fail(f"the state-dict manifest is expected at {MANIFEST} (shared/ beside the checkout)")
    return json.loads(MANIFEST.read_text())


@pytest.mark.parametrize("part", ["flow", "hift"])
def test_official_architecture_matches_manifest(official_modules, manifest: dict, part: str) -> None:
    module = getattr(official_modules, part)
    built = {key: list(value.shape) for key, value in module.state_dict().items()}
    expected = manifest[part]
    assert sorted(set(expected) - set(built)) == []
    assert sorted(set(built) - set(expected)) == []
    assert {k: v for k, v in built.items() if v != expected[k]} == {}
    assert all(param.device.type == "meta" for param in module.parameters())


def test_official_parameter_counts(official_modules) -> None:
    assert sum(p.numel() for p in official_modules.flow.parameters()) == 105_399_552
    assert sum(p.numel() for p in official_modules.hift.parameters()) == 20_460_591
