"""The settings, defined once: `ServiceConfig`'s fields, each with its type, default, help and allowed values.

`fakeweb serve` takes them from the defaults, then a TOML file, then `FAKEWEB_*` environment variables, then flags;
the flags of `serve`, `run` and `bench` are made from the same fields (`stream.cli.settings_flags`), and so is the
settings reference (`stream.settings_doc`).
"""

from __future__ import annotations

import ipaddress
import math
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.devices import DEVICE_CHOICES
from models.errors import FakewebError
from models.package import DEFAULT_PACKAGE_DIR, ModelPackage
from stream.live.reload import parse_model_ref
from stream.outputs.event_store import Retention
from stream.outputs.mqtt import MqttSettings
from stream.outputs.rtsp_out import H264_PROFILES, H264Profile, RtspOutSettings
from stream.pipeline.scoring import SETTINGS as SCORING_SETTINGS
from stream.pipeline.scoring import ScoringConfig
from stream.runtime.affinity import PIN_THREADS_MODES
from stream.sources.rtsp import DEFAULT_BACKOFF

if TYPE_CHECKING:
    from stream.pipeline.overlay import MeshFor

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


DETECTOR_RANGES = ("auto", "short", "full")
"""`models.detector.RANGE_SETTINGS`, repeated so that reading the configuration does not load MediaPipe."""
MESH_FOR = ("manipulated", "flagged", "all")
"""The values of `stream.pipeline.overlay.MeshFor`, repeated for the same reason (tests/stream/cli/test_settings_flags.py checks)."""
BACKENDS = ("auto", "tflite", "savedmodel")
"""Classifier backends (`models.classifier.load_classifier`)."""
ENV_PREFIX = "FAKEWEB_"
PIPELINE_SETTINGS = ("detector_range", "min_confidence", "detect_every", "mesh_every", "mesh_for")
"""The settings of a stream's pipeline (`PipelineConfig.from_settings`)."""
FRAME_SETTINGS = (*PIPELINE_SETTINGS, *SCORING_SETTINGS)
"""The per-frame settings: how a stream's frames are processed and its faces judged (`PipelineConfig` and
`ScoringConfig.from_settings`); `serve`, `run` and `bench` all take them."""
MODEL_SETTINGS = ("device", "backend", "threads")
"""How the classifier runs; the model itself is a folder for `run` and `bench`, also a store alias for `serve`."""
BATCH_SETTINGS = ("batch_max_size", "batch_max_wait_ms")
"""How the live service batches the classifier's crops across streams (`serve`, `bench live`)."""


class ConfigError(FakewebError):
    """The configuration is invalid or unsafe."""


def env_name(setting: str) -> str:
    """The environment variable of a setting: `FAKEWEB_<NAME>`."""
    return f"{ENV_PREFIX}{setting.upper()}"


def default_data_dir(environ: Mapping[str, str] | None = None) -> Path:
    """`$XDG_DATA_HOME/fakeweb`, else `~/.local/share/fakeweb`: a per-user folder, never the one the service
    starts in (a source tree, say), since the camera list holds credentials."""
    environ = os.environ if environ is None else environ
    xdg_data_home = environ.get("XDG_DATA_HOME", "")
    if os.path.isabs(xdg_data_home):  # the XDG spec ignores a relative value
        return Path(xdg_data_home) / "fakeweb"
    home = environ.get("HOME") or os.path.expanduser("~")
    if not os.path.isabs(home):
        raise ConfigError("no home folder for the data: set FAKEWEB_DATA_DIR (--data-dir) or HOME")
    return Path(home) / ".local" / "share" / "fakeweb"


@dataclass(frozen=True)
class Bounds:
    """The numbers a setting allows: from `low` to `high`, each end included unless it is open."""

    low: float
    high: float = math.inf
    low_open: bool = False
    high_open: bool = True

    def __contains__(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below  # never for NaN

    def __str__(self) -> str:
        if self.high == math.inf:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.low_open and self.high_open:
            return f"between {self.low:g} and {self.high:g} (exclusive)"
        return (
            f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        )


AT_LEAST_ONE = Bounds(1)
NOT_NEGATIVE = Bounds(0)
POSITIVE = Bounds(0, low_open=True)
FRACTION = Bounds(0, 1)
"""In [0, 1)."""


def setting(
    default: Any = MISSING,
    *,
    help: str,
    factory: Callable[[], Any] | None = None,
    choices: tuple[str, ...] | None = None,
    bounds: Bounds | None = None,
    shown: str | None = None,
) -> Any:
    """A ServiceConfig field with its one-line meaning (`help`, for docs/settings.md and the flags' help), its
    allowed values (a fixed set of `choices`, or numbers within `bounds`), and its default as `shown` when the
    value depends on the machine (as a `factory`'s always does)."""
    metadata = {"help": help, "choices": choices, "bounds": bounds, "shown": shown}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


_SCORING = ScoringConfig()


@dataclass(frozen=True)
class ServiceConfig:
    """Everything `fakeweb serve` needs; docs/settings.md, generated from the fields, lists them all."""

    host: str = setting("127.0.0.1", help="Address to bind; any but a loopback address needs `token`.")
    port: int = setting(8080, help="TCP port of the page, the API, WebRTC signalling and `/metrics`.")
    token: str | None = setting(
        None,
        shown="none: loopback only",
        help="Access token (8 characters or more) for the page and the API; give it in the environment, "
        "where `ps` does not show it.",
    )
    data_dir: Path = setting(
        factory=default_data_dir,
        help="Folder of `cameras.json` (the camera list, with its credentials) and `model-cache/`; created "
        "private to the user (mode 0700).",
        shown="`$XDG_DATA_HOME/fakeweb`, else `~/.local/share/fakeweb`",
    )
    model: str = setting(
        str(DEFAULT_PACKAGE_DIR),
        help="Model package folder, or `store://<store url>@<alias>` to follow a model store's alias and "
        "swap new versions in live.",
        shown="the shipped model, `models/default`",
    )
    device: str = setting("auto", choices=DEVICE_CHOICES, help="Accelerator of the classifier.")
    backend: str = setting(
        "auto",
        choices=BACKENDS,
        help="Classifier backend; `auto`: TFLite on the CPU, SavedModel on a GPU or HPU.",
    )
    threads: int = setting(1, bounds=AT_LEAST_ONE, help="TFLite CPU threads.")
    model_poll_seconds: float = setting(30.0, help="How often a `store://` model's alias is checked.")
    max_streams: int = setting(
        8,
        bounds=AT_LEAST_ONE,
        help="Most streams at once, browser webcams and cameras together (saved cameras all start).",
    )
    max_viewers: int = setting(16, bounds=AT_LEAST_ONE, help="Most WebRTC peer connections at once.")
    max_offer_bytes: int = setting(64 * 1024, help="Largest request body, WebRTC offers included.")
    max_width: int = setting(
        1280, help="Frames wider are downscaled to this width, keeping their aspect ratio, before processing."
    )
    max_height: int = setting(
        720,
        help="Frames taller are downscaled to this height, keeping their aspect ratio, before processing.",
    )
    detect_every: int = setting(
        3,
        bounds=AT_LEAST_ONE,
        help="Run the detector on every Nth processed frame; the tracker and the mesh bridge the others.",
    )
    mesh_every: int = setting(
        2,
        bounds=AT_LEAST_ONE,
        help="Run FaceMesh on every Nth processed frame; in between, each face's last mesh follows its box.",
    )
    classify_every: int = setting(
        _SCORING.classify_every,
        bounds=AT_LEAST_ONE,
        help="Classify each face every Nth frame (`stream.pipeline.scoring`).",
    )
    ema_alpha: float = setting(
        _SCORING.ema_alpha,
        bounds=Bounds(0, 1, low_open=True, high_open=False),
        help="Weight of the newest classifier sample in a face's smoothed score, in (0, 1]; 1: no smoothing.",
    )
    min_samples: int = setting(
        _SCORING.min_samples,
        bounds=AT_LEAST_ONE,
        help="Classifier samples a face needs before any verdict; it is `unknown`, with no score, until then.",
    )
    manipulated_after: int = setting(
        _SCORING.manipulated_after,
        bounds=AT_LEAST_ONE,
        help="Samples in a row with the smoothed score at or above the model's threshold `t` before "
        "`manipulated`.",
    )
    suspect_band: float = setting(
        _SCORING.suspect_band,
        bounds=FRACTION,
        help="The `suspect` band below the threshold, as a fraction of it: from (1 - suspect_band) * t.",
    )
    hysteresis_band: float = setting(
        _SCORING.hysteresis_band,
        bounds=FRACTION,
        help="A flagged face is `real` again only hysteresis_band * t below the suspect band's start.",
    )
    detector_range: str = setting(
        "auto",
        choices=DETECTOR_RANGES,
        help="BlazeFace model; `auto`: short range for browser webcams, full range for cameras and video files, "
        'whose faces are further away (docs/performance.md, "Detector range").',
    )
    min_confidence: float = setting(
        0.5,
        bounds=Bounds(0, 1, low_open=True),
        help="Face detector confidence (between 0 and 1) a detection needs.",
    )
    mesh_for: MeshFor = setting(
        "manipulated",
        choices=MESH_FOR,
        help="Faces that get the face mesh drawn; `flagged`: suspect or manipulated.",
    )
    batch_max_size: int = setting(
        16, bounds=AT_LEAST_ONE, help="Most face crops per classifier batch, from all streams together."
    )
    batch_max_wait_ms: float = setting(
        4.0,
        bounds=NOT_NEGATIVE,
        help="How long the batcher waits for more crops after the first before it runs a smaller batch.",
    )
    loopback_ice: bool = setting(
        False, help="Offer only 127.0.0.1 as ICE address, with no STUN server (hosts reached over loopback)."
    )
    rtsp_backoff_seconds: tuple[float, ...] = setting(
        DEFAULT_BACKOFF,
        help="Waits before reconnect attempts to a lost camera or RTSP out server, one step per failure in a row; "
        "the last repeats.",
    )
    rtsp_stall_seconds: float = setting(
        5.0,
        bounds=POSITIVE,
        help="A live camera that delivers no frame for this long is reconnected (the watchdog).",
    )
    max_parallel_frames: int = setting(
        0,
        bounds=NOT_NEGATIVE,
        help="Frames processed at once across all streams (the others wait, replaceable by newer ones); 0: one "
        "per CPU the process may use.",
    )
    connect_timeout_seconds: float = setting(
        15.0,
        bounds=POSITIVE,
        help="A WebRTC peer not connected this long after its answer is closed, freeing its slot.",
    )
    video_bitrate_kbps: int = setting(
        1000,
        bounds=Bounds(50),
        help="VP8 bitrate of each stream's annotated video, encoded once for all its viewers (no per-viewer "
        "adaptation).",
    )
    rtsp_out_url: str = setting(
        "",
        shown="empty: off",
        help="Media server that takes RTSP publishing (ANNOUNCE/RECORD), e.g. `rtsp://127.0.0.1:8554` (MediaMTX): "
        "every stream's annotated video is published there in H.264 for NVRs and players (docs/operations.md).",
    )
    rtsp_out_path: str = setting(
        "fakeweb/{stream}", help="A stream's path on `rtsp_out_url`; `{stream}` is replaced by the stream id."
    )
    rtsp_out_bitrate_kbps: int = setting(
        2000, bounds=Bounds(100), help="H.264 bitrate of each stream published over RTSP."
    )
    rtsp_out_keyframe_seconds: float = setting(
        2.0,
        bounds=POSITIVE,
        help="Seconds between keyframes of the RTSP publication (where readers can start).",
    )
    rtsp_out_profile: H264Profile = setting(
        "baseline",
        choices=H264_PROFILES,
        help="H.264 profile of the RTSP publication; baseline plays everywhere.",
    )
    events: bool = setting(
        True,
        help="Record events: a face judged manipulated, with an annotated snapshot and its crops, under "
        "`data_dir/events` (pictures of faces: the API serves them only with the token).",
    )
    events_suspect_seconds: float = setting(
        0.0,
        bounds=NOT_NEGATIVE,
        help="A face suspect this long also opens an event; 0: only manipulated ones.",
    )
    events_max_count: int = setting(1000, bounds=AT_LEAST_ONE, help="Most events kept; the oldest go first.")
    events_max_age_days: float = setting(30.0, bounds=POSITIVE, help="Events older than this are deleted.")
    events_max_mb: int = setting(1024, bounds=AT_LEAST_ONE, help="Most megabytes of events kept on disk.")
    mqtt_url: str = setting(
        "",
        shown="empty: off",
        help="MQTT broker for event notifications, `mqtt://[user:password@]host[:port]` (`mqtts://` for TLS); "
        "topics in docs/operations.md.",
    )
    mqtt_topic_prefix: str = setting("fakeweb", help="First level of every MQTT topic the service publishes.")
    webhook_url: str = setting(
        "",
        shown="empty: off",
        help="URL that gets a JSON POST for every event change (retried after 1, 2 and 4 s; docs/operations.md).",
    )
    camera_list: str = setting(
        "",
        shown="`cameras.json` in `data_dir`",
        help="The camera list file; replicas that share cameras read the same one (a shared volume or a "
        "Kubernetes ConfigMap, docs/kubernetes.md). Re-read every `camera_poll_seconds`.",
    )
    camera_poll_seconds: float = setting(
        5.0,
        bounds=POSITIVE,
        help="How often the camera list file is re-read for cameras added or removed elsewhere.",
    )
    replicas: int = setting(
        1,
        bounds=AT_LEAST_ONE,
        help="Service processes sharing the camera list; each camera runs on exactly one.",
    )
    replica_id: int = setting(
        0, bounds=NOT_NEGATIVE, help="This process's index among `replicas` (a StatefulSet pod's ordinal)."
    )
    replica_url: str = setting(
        "",
        help="Base URL of replica `{replica}` as the others reach it, e.g. "
        "`http://fakeweb-{replica}.fakeweb-replicas:8080`: requests for a camera another replica runs are "
        "forwarded there. Needed with `replicas` > 1.",
    )
    ice_servers: tuple[str, ...] = setting(
        (),
        shown="none",
        help="STUN/TURN servers offered to WebRTC peers (`stun:host:3478`, `turn:host:3478?transport=udp`); "
        "needed when browsers cannot reach the service's own addresses (docs/kubernetes.md).",
    )
    ice_username: str = setting("", help="Username for the `turn:` servers of `ice_servers`.")
    ice_credential: str = setting("", help="Credential (password) for the `turn:` servers of `ice_servers`.")
    pin_threads: str = setting(
        "auto",
        choices=PIN_THREADS_MODES,
        help="Pin the workers and batcher to half the CPUs, the decoders and encoders to the rest; `auto`: "
        "while the load allows (`stream.runtime.cpu_split`).",
    )

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
        for item in fields(self):
            value, choices, bounds = (
                getattr(self, item.name),
                item.metadata["choices"],
                item.metadata["bounds"],
            )
            if choices is not None and value not in choices:
                raise ConfigError(f"{item.name} must be one of {', '.join(choices)}, got {value!r}")
            if bounds is not None and value not in bounds:
                raise ConfigError(f"{item.name} must be {bounds}, got {value}")
        try:
            # The bands are fractions of the threshold: settings valid for one threshold are valid for all.
            self.scoring(_SCORING.threshold)
        except ValueError as exc:
            raise ConfigError(f"scoring settings: {exc}") from exc
        if not self.rtsp_backoff_seconds or not all(0 <= s < math.inf for s in self.rtsp_backoff_seconds):
            raise ConfigError("rtsp_backoff_seconds must be one or more waits >= 0")
        try:
            self.rtsp_out()
            self.mqtt()
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        if self.webhook_url and not self.webhook_url.startswith(("http://", "https://")):
            raise ConfigError("webhook_url must be an http:// or https:// URL")
        if self.replica_id >= self.replicas:
            raise ConfigError(f"replica_id must be below replicas ({self.replicas}), got {self.replica_id}")
        if self.replicas > 1 and "{replica}" not in self.replica_url:
            raise ConfigError(
                "replicas > 1 needs replica_url with {replica}, e.g. http://fakeweb-{replica}:8080"
            )

    def mqtt(self) -> MqttSettings | None:
        """Where event notifications go, None when `mqtt_url` is empty."""
        return MqttSettings(self.mqtt_url, self.mqtt_topic_prefix) if self.mqtt_url else None

    def rtsp_out(self) -> RtspOutSettings | None:
        """How streams are published over RTSP, None when `rtsp_out_url` is empty."""
        if not self.rtsp_out_url:
            return None
        return RtspOutSettings(
            server=self.rtsp_out_url,
            path=self.rtsp_out_path,
            bitrate=self.rtsp_out_bitrate_kbps * 1000,
            keyframe_interval=self.rtsp_out_keyframe_seconds,
            profile=self.rtsp_out_profile,
            backoff_schedule=self.rtsp_backoff_seconds,
        )

    def scoring(self, threshold: float) -> ScoringConfig:
        """The scoring settings for a model whose manifest gives `threshold`."""
        return ScoringConfig.from_settings(threshold, self)

    @property
    def cameras_file(self) -> Path:
        return Path(self.camera_list).expanduser() if self.camera_list else self.data_dir / "cameras.json"

    @property
    def events_dir(self) -> Path:
        return self.data_dir / "events"

    def event_retention(self) -> Retention:
        return Retention(self.events_max_count, self.events_max_age_days, self.events_max_mb << 20)

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


SETTING_TYPES: dict[str, type] = {
    "str": str,
    "str | None": str,
    "int": int,
    "float": float,
    "bool": bool,
    "Path": Path,
    "tuple[float, ...]": tuple,
    "tuple[str, ...]": list,
}
"""The Python type of each kind of ServiceConfig field, by its annotation; a field with `choices` is a `str`."""


def setting_type(item: Field[Any]) -> type:
    """The Python type of the ServiceConfig field `item`."""
    return str if item.metadata["choices"] else SETTING_TYPES[str(item.type)]


def _coerce(name: str, value: Any) -> Any:
    """Convert a TOML or environment value to the type of the ServiceConfig field `name`."""
    kind = setting_type({f.name: f for f in fields(ServiceConfig)}[name])
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            return str(value).strip().lower() in ("1", "true", "yes", "on")
        if kind is Path:
            return Path(value).expanduser()
        if kind in (tuple, list):  # a TOML list, or "1, 1, 5" from the environment
            items = value if isinstance(value, list | tuple) else str(value).replace(",", " ").split()
            return tuple(float(item) if kind is tuple else str(item) for item in items)
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
        env_value = environ.get(env_name(name))
        if env_value is not None and env_value != "":
            values[name] = env_value
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    if "data_dir" not in values:
        values["data_dir"] = default_data_dir(environ)
    return ServiceConfig(**{name: _coerce(name, value) for name, value in values.items()})


def check_model_reference(reference: str) -> None:
    """Fail fast, before the model loads, on a `model` that cannot be one: a folder must exist and hold a
    manifest and the files it lists (their checksums are verified when it loads); a store reference must be
    well formed (its store is reached only when the model loads)."""
    target = parse_model_ref(reference)
    if isinstance(target, Path):
        ModelPackage.load(target, verify_checksums=False)


def make_data_dir(path: Path) -> None:
    """Create the data folder private to the user (mode 0700: the camera list holds credentials); a folder
    that exists keeps its mode."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
