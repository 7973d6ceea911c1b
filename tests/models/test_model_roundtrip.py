"""Every public model round-trips exactly through JSON, in memory and through files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import BaseModel

import tomoforge.models as models
from tomoforge.models import load_json, save_json

MODEL_NAMES = sorted(
    name
    for name in models.__all__
    if isinstance(getattr(models, name), type) and issubclass(getattr(models, name), BaseModel)
)


def test_every_public_model_has_an_example(examples: dict[str, BaseModel]) -> None:
    assert set(MODEL_NAMES) == set(examples)
    for name, instance in examples.items():
        assert type(instance) is getattr(models, name)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_json_round_trip_is_exact(name: str, examples: dict[str, BaseModel]) -> None:
    original = examples[name]
    text = original.model_dump_json()
    restored = type(original).model_validate_json(text)
    assert restored == original
    assert restored.model_dump() == original.model_dump()
    assert restored.model_dump_json() == text


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_file_round_trip_is_exact(name: str, examples: dict[str, BaseModel], tmp_path: Path) -> None:
    original = examples[name]
    path = save_json(original, tmp_path / f"{name}.json")
    restored = load_json(type(original), path)
    assert restored == original
    json.loads(path.read_text(encoding="utf-8"))  # plain JSON on disk


def test_paths_and_datetimes_come_back_typed(examples: dict[str, BaseModel]) -> None:
    ts = examples["TiltSeries"]
    assert isinstance(ts, models.TiltSeries)
    restored = models.TiltSeries.model_validate_json(ts.model_dump_json())
    assert isinstance(restored.stack_file, Path)
    assert restored.stack_file == Path("stacks/TS_01.mrc")
    assert restored.even_stack_file == Path("stacks/TS_01_even.mrc")
    assert restored.tilts[0].acquired_at == ts.tilts[0].acquired_at
    assert restored.tilts[0].acquired_at is not None and restored.tilts[0].acquired_at.tzinfo is not None
    assert isinstance(restored.tilts[1].transform, models.TiltTransform)


def test_tuples_survive_round_trip(examples: dict[str, BaseModel]) -> None:
    particle = examples["Particle"]
    assert isinstance(particle, models.Particle)
    restored = models.Particle.model_validate_json(particle.model_dump_json())
    assert isinstance(restored.rotation_matrix, tuple)
    assert isinstance(restored.rotation_matrix[0], tuple)
    assert restored.position_angstrom == (120.5, -3.25, 1e-3)
