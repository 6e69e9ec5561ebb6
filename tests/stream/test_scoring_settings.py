"""The verdict settings of `fakeweb serve`: read like every setting (defaults, TOML, environment), checked at
start, valid for any model threshold, and followed by the live service when a hot reload changes the model."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import pytest

from models.manifest import Manifest
from models.preprocess import CropSpec
from stream.config import ConfigError, ServiceConfig, load_config
from stream.live.cameras import CameraList
from stream.live.service import LiveService
from stream.outputs.metrics import Metrics
from stream.pipeline.scoring import ScoringConfig


def test_defaults_match_the_scoring_defaults() -> None:
    config = ServiceConfig()
    assert config.scoring(0.5) == ScoringConfig(threshold=0.5)
    assert (config.min_samples, config.manipulated_after, config.ema_alpha) == (3, 2, 0.4)
    assert (config.suspect_band, config.hysteresis_band) == (0.3, 0.1)


def test_settings_from_toml_and_environment(tmp_path: Path) -> None:
    toml = tmp_path / "fakeweb.toml"
    toml.write_text("min_samples = 4\nsuspect_band = 0.5\nema_alpha = 1\n", encoding="utf-8")
    environ = {"FAKEWEB_MANIPULATED_AFTER": "3", "FAKEWEB_HYSTERESIS_BAND": "0.2", "FAKEWEB_MIN_SAMPLES": "5"}
    config = load_config(toml, environ=environ)
    scoring = config.scoring(0.05)
    assert (scoring.threshold, scoring.min_samples, scoring.manipulated_after) == (0.05, 5, 3)
    assert (scoring.ema_alpha, scoring.suspect_band, scoring.hysteresis_band) == (1.0, 0.5, 0.2)


@pytest.mark.parametrize(
    ("environ", "match"),
    [
        ({"FAKEWEB_MIN_SAMPLES": "0"}, "min_samples must be >= 1"),
        ({"FAKEWEB_MANIPULATED_AFTER": "0"}, "manipulated_after must be >= 1"),
        ({"FAKEWEB_EMA_ALPHA": "0"}, "ema_alpha"),
        ({"FAKEWEB_EMA_ALPHA": "nan"}, "ema_alpha"),
        ({"FAKEWEB_SUSPECT_BAND": "-0.1"}, "suspect_band"),
        (
            {"FAKEWEB_SUSPECT_BAND": "0.7", "FAKEWEB_HYSTERESIS_BAND": "0.3"},
            "suspect_band \\+ hysteresis_band",
        ),
        ({"FAKEWEB_MIN_SAMPLES": "many"}, "setting min_samples: invalid value"),
    ],
)
def test_invalid_settings_are_refused_at_start(environ: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(environ=environ)


@pytest.mark.parametrize("threshold", [0.05, 0.5, 0.95])
@pytest.mark.parametrize(
    "settings",
    [{}, {"suspect_band": 0.0, "hysteresis_band": 0.0}, {"suspect_band": 0.9, "hysteresis_band": 0.09}],
)
def test_valid_settings_are_valid_for_any_threshold(threshold: float, settings: dict[str, float]) -> None:
    scoring = ServiceConfig(**settings).scoring(threshold)  # type: ignore[arg-type]
    assert scoring.threshold == threshold
    assert 0.0 < scoring.real_below <= scoring.suspect_from <= threshold


def manifest(version: str, threshold: float) -> Manifest:
    return Manifest(
        version=version,
        created_at="2025-01-01T00:00:00+00:00",
        architecture="tiny-conv",
        crop=CropSpec(size=32),
        threshold=threshold,
        files={"model.tflite": "0" * 64},
    )


def test_the_service_builds_scoring_from_the_serving_model_and_follows_a_swap(tmp_path: Path) -> None:
    """One ScoringConfig per manifest (every stream's pipeline asks on every frame); a swapped-in model's
    threshold is what running streams get next."""
    holder = SimpleNamespace(current=SimpleNamespace(package=SimpleNamespace(manifest=manifest("v1", 0.5))))
    config = ServiceConfig(data_dir=tmp_path, min_samples=4, suspect_band=0.2)
    service = LiveService(config, holder, Metrics(), CameraList(tmp_path / "cameras.json"))  # type: ignore[arg-type]
    first = service._scoring_config()
    assert first == config.scoring(0.5) and first.min_samples == 4 and first.suspect_band == 0.2
    assert service._scoring_config() is first
    assert service._pipeline_config().scoring is first
    holder.current = SimpleNamespace(package=SimpleNamespace(manifest=manifest("v2", 0.12)))
    second = service._scoring_config()
    assert second == dataclasses.replace(first, threshold=0.12)
    assert service._scoring_config() is second
