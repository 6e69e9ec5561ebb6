"""Service configuration: defaults, then a TOML file, then `FAKEWEB_*` environment variables, then flags."""

from __future__ import annotations

import ipaddress
import math
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from models.errors import FakewebError
from models.package import DEFAULT_PACKAGE_DIR
from stream.affinity import PIN_THREADS_MODES
from stream.rtsp import DEFAULT_BACKOFF
from stream.scoring import ScoringConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


DETECTOR_RANGES = ("auto", "short", "full")
"""`models.detector.RANGE_SETTINGS`, repeated so that reading the configuration does not load MediaPipe."""


class ConfigError(FakewebError):
    """The configuration is invalid or unsafe."""


_SCORING = ScoringConfig()


@dataclass(frozen=True)
class ServiceConfig:
    """Everything `fakeweb serve` needs. See docs/operations.md for each setting."""

    host: str = "127.0.0.1"
    port: int = 8080
    token: str | None = None
    data_dir: Path = field(default_factory=lambda: Path("fakeweb-data"))
    model: str = str(DEFAULT_PACKAGE_DIR)
    device: str = "auto"
    backend: str = "auto"
    threads: int = 1
    model_poll_seconds: float = 30.0
    max_streams: int = 8
    max_viewers: int = 16
    max_offer_bytes: int = 64 * 1024
    max_width: int = 1280
    max_height: int = 720
    detect_every: int = 3
    """Run the detector on every Nth processed frame; the tracker and the mesh bridge the others."""
    mesh_every: int = 2
    """Run FaceMesh on every Nth processed frame; in between, each face's last mesh follows its box."""
    classify_every: int = _SCORING.classify_every
    """Classify each face every Nth frame (`stream.scoring`); the settings below decide its verdict."""
    ema_alpha: float = _SCORING.ema_alpha
    """Weight of the newest classifier sample in a face's smoothed score (1: no smoothing)."""
    min_samples: int = _SCORING.min_samples
    """Classifier samples a face needs before any verdict; it is "unknown", with no score shown, until then."""
    manipulated_after: int = _SCORING.manipulated_after
    """Samples in a row with the smoothed score at or above the model's threshold before "manipulated"."""
    suspect_band: float = _SCORING.suspect_band
    """The "suspect" band below the threshold, as a fraction of the threshold: from (1 - suspect_band) * t."""
    hysteresis_band: float = _SCORING.hysteresis_band
    """A flagged face is "real" again only hysteresis_band * t below the suspect band's start."""
    detector_range: str = "auto"
    """BlazeFace model: `short`, `full`, or `auto`: short range for browser webcams, full range for cameras, whose
    faces are further away (`models.detector.AUTO_RANGES`; docs/performance.md, "Detector range")."""
    min_confidence: float = 0.5
    mesh_for: str = "manipulated"
    batch_max_size: int = 16
    batch_max_wait_ms: float = 4.0
    loopback_ice: bool = False
    rtsp_backoff_seconds: tuple[float, ...] = DEFAULT_BACKOFF
    """Waits before a lost camera's reconnect attempts, one step per failure in a row; the last repeats."""
    rtsp_stall_seconds: float = 5.0
    """A live camera that delivers no frame for this long is reconnected (the watchdog)."""
    max_parallel_frames: int = 0
    """Frames processed at once across all streams; 0: one per CPU the process may use (its affinity). The others
    wait, replaceable."""
    connect_timeout_seconds: float = 15.0
    """A WebRTC peer that has not connected this long after its answer is closed, freeing its slot."""
    video_bitrate_kbps: int = 1000
    """The VP8 bitrate of each stream's annotated video, encoded once for all its viewers (no per-viewer adaptation)."""
    pin_threads: str = "auto"
    """Pin the workers and batcher to half the CPUs and the decoders and encoders to the rest: `on`, `off`, or
    `auto` to pin while the load allows (`stream.affinity`, `stream.cpu_split`)."""

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ConfigError(f"port must be 1-65535, got {self.port}")
        if self.token is not None and len(self.token) < 8:
            raise ConfigError("token must be at least 8 characters")
        if self.token is not None and self.token != self.token.strip():
            raise ConfigError("token must not start or end with whitespace")
        if not self.token and not is_loopback(self.host):
            raise ConfigError(
                f"refusing to bind {self.host} without a token: set FAKEWEB_TOKEN (or --token) "
                "or bind 127.0.0.1"
            )
        for name in (
            "max_streams",
            "max_viewers",
            "threads",
            "detect_every",
            "mesh_every",
            "classify_every",
            "min_samples",
            "manipulated_after",
            "batch_max_size",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1")
        try:
            # The bands are fractions of the threshold: settings valid for one threshold are valid for all.
            self.scoring(_SCORING.threshold)
        except ValueError as exc:
            raise ConfigError(f"scoring settings: {exc}") from exc
        if self.video_bitrate_kbps < 50:
            raise ConfigError("video_bitrate_kbps must be >= 50")
        if self.detector_range not in DETECTOR_RANGES:
            raise ConfigError(
                f"detector_range must be one of {', '.join(DETECTOR_RANGES)}, got {self.detector_range!r}"
            )
        if self.pin_threads not in PIN_THREADS_MODES:
            raise ConfigError(
                f"pin_threads must be one of {', '.join(PIN_THREADS_MODES)}, got {self.pin_threads!r}"
            )
        if self.max_parallel_frames < 0:
            raise ConfigError("max_parallel_frames must be >= 0 (0: one per CPU the process may use)")
        if not self.rtsp_backoff_seconds or not all(0 <= s < math.inf for s in self.rtsp_backoff_seconds):
            raise ConfigError("rtsp_backoff_seconds must be one or more waits >= 0")
        for name in ("rtsp_stall_seconds", "connect_timeout_seconds"):
            if not 0 < getattr(self, name) < math.inf:
                raise ConfigError(f"{name} must be > 0")

    def scoring(self, threshold: float) -> ScoringConfig:
        """The scoring settings for a model whose manifest gives `threshold`."""
        return ScoringConfig.from_settings(threshold, self)

    @property
    def cameras_file(self) -> Path:
        return self.data_dir / "cameras.json"

    @property
    def model_cache_dir(self) -> Path:
        return self.data_dir / "model-cache"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _coerce(name: str, value: Any) -> Any:
    """Convert a TOML or environment value to the type of the ServiceConfig field `name`."""
    default = {f.name: f for f in fields(ServiceConfig)}[name]
    kind = type(getattr(ServiceConfig(), name)) if name != "token" else str
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            return str(value).strip().lower() in ("1", "true", "yes", "on")
        if kind is Path or default.name == "data_dir":
            return Path(value)
        if kind is tuple:  # a TOML list, or "1, 1, 5" from the environment
            items = value if isinstance(value, list | tuple) else str(value).replace(",", " ").split()
            return tuple(float(item) for item in items)
        return kind(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"setting {name}: invalid value {value!r} ({exc})") from exc


def load_config(
    path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> ServiceConfig:
    """Build the configuration: defaults < TOML file < FAKEWEB_<NAME> environment variables < `overrides`."""
    environ = os.environ if environ is None else environ
    known = {f.name for f in fields(ServiceConfig)}
    values: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read configuration ({exc})") from exc
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{path}: unknown settings {', '.join(unknown)}")
        values.update(data)
    for name in known:
        env_value = environ.get(f"FAKEWEB_{name.upper()}")
        if env_value is not None and env_value != "":
            values[name] = env_value
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    coerced = {name: _coerce(name, value) for name, value in values.items()}
    return replace(ServiceConfig(), **coerced)
