"""save_json / load_json: atomic writes and one-sentence errors that name the file."""

from __future__ import annotations

from pathlib import Path

import pytest

import tomoforge.models._json as json_module
from tomoforge.models import Acquisition, ModelFileError, TiltSeries, load_json, save_json


def _acq(voltage: float = 300.0) -> Acquisition:
    return Acquisition(
        voltage_kv=voltage,
        spherical_aberration_mm=2.7,
        amplitude_contrast=0.1,
        pixel_size_angstrom=1.1,
        tilt_axis_angle_deg=-94.5,
        dose_per_tilt_e_per_angstrom2=3.0,
    )


def test_save_overwrites_and_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "acq.json"
    save_json(_acq(300.0), path)
    save_json(_acq(200.0), path)
    assert load_json(Acquisition, path).voltage_kv == 200.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["acq.json"]


def test_save_accepts_str_paths(tmp_path: Path) -> None:
    result = save_json(_acq(), str(tmp_path / "a.json"), indent=None)
    assert result == tmp_path / "a.json"
    assert result.read_text(encoding="utf-8").count("\n") == 1


@pytest.mark.parametrize("failing", ["replace", "fsync"])
def test_failure_during_write_keeps_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    path = tmp_path / "acq.json"
    save_json(_acq(300.0), path)
    before = path.read_bytes()

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(json_module.os, failing, boom)
    with pytest.raises(OSError, match="disk full"):
        save_json(_acq(120.0), path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert load_json(Acquisition, path).voltage_kv == 300.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["acq.json"]


def test_interrupted_write_keeps_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "acq.json"
    save_json(_acq(300.0), path)
    before = path.read_bytes()
    real_fdopen = json_module.os.fdopen

    class HalfWriter:
        def __init__(self, fd: int, *args: object, **kwargs: object) -> None:
            self._handle = real_fdopen(fd, "w", encoding="utf-8")

        def __enter__(self) -> HalfWriter:
            return self

        def __exit__(self, *exc: object) -> None:
            self._handle.close()

        def write(self, text: str) -> int:
            self._handle.write(text[: len(text) // 2])
            raise KeyboardInterrupt

    monkeypatch.setattr(json_module.os, "fdopen", HalfWriter)
    with pytest.raises(KeyboardInterrupt):
        save_json(_acq(120.0), path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["acq.json"]


def test_missing_file_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "ts.json"
    with pytest.raises(ModelFileError) as exc:
        load_json(TiltSeries, path)
    assert str(exc.value) == f"{path}: file not found (expected a TiltSeries JSON file)"
    assert exc.value.path == path
    assert isinstance(exc.value, ValueError)


@pytest.mark.parametrize("content", ["this is not json", '{"voltage_kv": 300,', ""])
def test_garbage_file_error_names_the_file(tmp_path: Path, content: str) -> None:
    path = tmp_path / "acq.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ModelFileError, match=r"^.*acq\.json: not valid JSON \(.* at line 1 column \d+\)$"):
        load_json(Acquisition, path)


def test_undecodable_file(tmp_path: Path) -> None:
    path = tmp_path / "acq.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ModelFileError, match="acq.json: cannot read the file"):
        load_json(Acquisition, path)


def test_validation_error_names_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "acq.json"
    path.write_text(
        _acq().model_dump_json().replace('"pixel_size_angstrom":1.1', '"pixel_size_angstrom":-1.1')
    )
    with pytest.raises(ModelFileError) as exc:
        load_json(Acquisition, path)
    assert str(exc.value) == f"{path}: field 'pixel_size_angstrom': Input should be greater than 0"


def test_nested_field_and_error_count(tmp_path: Path, tilt_series: TiltSeries) -> None:
    path = tmp_path / "ts.json"
    text = tilt_series.model_dump_json()
    text = text.replace('"tilt_angle_deg":6.0', '"tilt_angle_deg":120.0').replace(
        '"voltage_kv":300.0', '"voltage_kv":0'
    )
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ModelFileError) as exc:
        load_json(TiltSeries, path)
    message = str(exc.value)
    assert message.startswith(f"{path}: field '")
    assert "'acquisition.voltage_kv': Input should be greater than 0" in message
    assert message.endswith("(and 1 more problem)")


def test_model_level_error_and_wrong_model(tmp_path: Path, tilt_series: TiltSeries) -> None:
    path = tmp_path / "ts.json"
    save_json(tilt_series.model_copy(update={"aligned": True}), path)  # model_copy skips validation
    with pytest.raises(
        ModelFileError,
        match=r"ts\.json: invalid TiltSeries: aligned is True but included tilts \[0, 2, 3\] have no transform$",
    ):
        load_json(TiltSeries, path)
    with pytest.raises(ModelFileError, match="field 'voltage_kv': Field required"):
        load_json(Acquisition, path)
