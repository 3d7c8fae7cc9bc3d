"""mesofield's experiment files: ``hardware.yaml`` + ``experiment.json``, validated.

A launch target is a folder holding both, a ``hardware.yaml``, or an
``experiment.json`` with a sibling ``hardware.yaml``. The JSON may be named otherwise
(mesofield's own sample is ``devcfg.json``): ``experiment.json`` wins, else the one
JSON file of the folder with a ``Subjects`` object.

Every problem is one :class:`ExperimentError` line naming the file and the key, so the
CLI can print it as is. The files are input like any other: numbers must be finite and
in a sane range (:data:`LIMITS`), YAML aliases may not expand beyond
:data:`MAX_VALUES` values (a "billion laughs" file is refused before it is built),
nesting is bounded (:data:`MAX_DEPTH`) in both files, a file is at most 1 MiB and a
regular file, and output folder and file-name keys are single names (letters and
digits), so every file of a run stays inside the experiment folder. Unknown keys are kept (``extra``) and end up in the
configuration CSV or the manifest, never rejected: rigs carry settings we do not use.

How ``hardware.yaml`` selects devices here:

- ``backend: micromanager`` — its own core from ``configuration_path``; without one,
  the built-in simulated camera (size from ``properties: {width, height}``, rate from
  ``fps``).
- ``backend: opencv`` — ``device:`` (or mesofield's ``device_index``) is a camera index,
  a file path or a URL; ``device: sim`` (or ``simulated: true``) is the simulated
  pupil camera.
- ``encoder: {type: wheel|treadmill, port, development_mode, ...}`` — a serial port
  (anything ``serial.serial_for_url`` opens, ``loop://`` included); with
  ``development_mode: true`` simulated samples.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.formats.safe_open import MAX_SETTINGS_BYTES, is_regular, read_text
from ..data.formats.tiff_compressed import parse_compression
from ..data.manager.paths import validate_label

HARDWARE_NAME = "hardware.yaml"
EXPERIMENT_NAME = "experiment.json"
BACKENDS = ("micromanager", "opencv")
ENCODER_TYPES = ("wheel", "treadmill")
RESERVED_IDS = ("encoder", "treadmill", "notes", "dataqueue", "session", "run")
_FILE_TYPES = {
    "ome.tiff": "tiff",
    "ome.tif": "tiff",
    "tiff": "tiff",
    "tif": "tiff",
    "mp4": "mp4",
    "avi": "avi",
}
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0", "")
_CAMERA_KEYS = {
    "id",
    "name",
    "backend",
    "primary",
    "configuration_path",
    "micromanager_path",
    "properties",
    "fps",
    "output",
    "device",
    "device_index",
    "simulated",
    "width",
    "height",
}
_ENCODER_KEYS = {
    "id",
    "type",
    "port",
    "baudrate",
    "cpr",
    "diameter_mm",
    "sample_interval_ms",
    "development_mode",
    "primary",
    "output",
}
_JSON_KEYS = {"Configuration", "Subjects", "DisplayKeys", "experiment_directory"}
MAX_DEPTH = 32  # nesting levels of either file (real ones use < 6)
MAX_VALUES = 100_000  # values a YAML file may expand to through its aliases
MAX_DURATION_S = 7 * 24 * 3600.0
# upper bounds of numeric keys: far above any rig, far below what breaks arithmetic
LIMITS = {
    "fps": 1000.0,
    "width": 65536.0,
    "height": 65536.0,
    "exposure_ms": 3_600_000.0,
    "baudrate": 100_000_000.0,
    "cpr": 1_000_000_000.0,
    "diameter_mm": 10_000.0,
    "sample_interval_ms": 60_000.0,
}


class ExperimentError(ValueError):
    """A launch target or experiment file is unusable (one line, names file + key)."""


@dataclass
class Output:
    """Where a device's file goes: ``bids_type`` folder, ``kind`` and name suffix."""

    bids_type: str
    kind: str  # "tiff", "mp4", "avi" or "csv"
    suffix: str
    fourcc: str | None = None  # video codec (default: $MESOFIELD_FOURCC, else H.264)
    compression: str = (
        ""  # a TIFF's lossless codec ("" none; data.formats.tiff_compressed)
    )


@dataclass
class CameraSpec:
    """One ``cameras:`` entry of ``hardware.yaml``."""

    id: str
    name: str
    backend: str
    primary: bool
    output: Output
    fps: float | None = None
    configuration_path: Path | None = None
    micromanager_path: Path | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    device: int | str | None = None  # opencv: index, path/URL or "sim"
    width: int | None = None
    height: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def simulated(self) -> bool:
        """True when this camera is one of our simulated cameras."""
        if self.backend == "opencv":
            return self.device == "sim"
        return self.configuration_path is None


@dataclass
class EncoderSpec:
    """The ``encoder:`` block of ``hardware.yaml``."""

    id: str
    type: str
    port: str | None
    baudrate: int
    cpr: int
    diameter_mm: float
    sample_interval_ms: float
    development_mode: bool
    primary: bool
    output: Output
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Experiment:
    """Both files, loaded and checked."""

    hardware_path: Path
    json_path: Path
    cameras: list[CameraSpec]
    encoder: EncoderSpec | None
    configuration: dict[str, Any]
    subjects: dict[str, dict[str, Any]]
    experiment_directory: Path | None = None
    hardware_extra: dict[str, Any] = field(default_factory=dict)
    json_extra: dict[str, Any] = field(default_factory=dict)

    @property
    def primary(self) -> CameraSpec | EncoderSpec:
        for cam in self.cameras:
            if cam.primary:
                return cam
        assert self.encoder is not None and self.encoder.primary
        return self.encoder

    @property
    def duration_s(self) -> float | None:
        return self.configuration.get("duration")

    def subject(self, subject: str | None = None) -> tuple[str, dict[str, Any]]:
        """``(id, metadata)`` of ``subject`` (default: the first in ``Subjects``)."""
        if subject is None:
            subject = next(iter(self.subjects))
        if subject not in self.subjects:
            known = ", ".join(self.subjects)
            raise ExperimentError(
                f"{self.json_path}: unknown subject {subject!r} (Subjects has: {known})"
            )
        return subject, dict(self.subjects[subject])

    def parameters(self, subject: str) -> dict[str, Any]:
        """``Parameter,Value`` rows: Configuration, subject metadata, extras.

        ``subject``/``session``/``task`` are left to the run manager (it writes the
        run's actual values first).
        """
        _, meta = self.subject(subject)
        rows: dict[str, Any] = {}
        skip = {"subject", "session", "task"}
        for source in (self.configuration, meta, self.json_extra):
            for key, value in source.items():
                if key not in skip and key not in rows:
                    rows[key] = _cell(value)
        for key, value in self.hardware_extra.items():
            rows.setdefault(f"hardware.{key}", _cell(value))
        return rows


# ---------------------------------------------------------------- target
def resolve_target(target: str | Path) -> tuple[Path, Path]:
    """``(hardware.yaml, experiment JSON)`` for a folder or either file."""
    path = Path(target).expanduser()
    if not path.exists():
        raise ExperimentError(f"{path}: no such file or folder")
    if path.is_dir():
        hardware = path / HARDWARE_NAME
        if not hardware.is_file():
            raise ExperimentError(f"{path}: no {HARDWARE_NAME} in this folder")
        return hardware, _find_json(path)
    if path.suffix.lower() in (".yaml", ".yml"):
        return path, _find_json(path.parent)
    if path.suffix.lower() == ".json":
        hardware = path.parent / HARDWARE_NAME
        if not hardware.is_file():
            raise ExperimentError(f"{path}: no {HARDWARE_NAME} next to it")
        return hardware, path
    raise ExperimentError(
        f"{path}: not an experiment (give a folder, a hardware.yaml or an "
        f"experiment.json)"
    )


def _find_json(folder: Path) -> Path:
    preferred = folder / EXPERIMENT_NAME
    if preferred.is_file():
        return preferred
    found = []
    for candidate in sorted(folder.glob("*.json")):
        if not is_regular(candidate):  # a FIFO named x.json would block the read
            continue
        try:
            data = json.loads(read_text(candidate, MAX_SETTINGS_BYTES))
        except (OSError, ValueError, RecursionError):
            continue
        if isinstance(data, dict) and "Subjects" in data:
            found.append(candidate)
    if len(found) == 1:
        return found[0]
    if not found:
        raise ExperimentError(
            f"{folder}: no {EXPERIMENT_NAME} (or other JSON file with 'Subjects')"
        )
    names = ", ".join(p.name for p in found)
    raise ExperimentError(
        f"{folder}: several experiment JSON files ({names}); "
        f"name one {EXPERIMENT_NAME} or give its path"
    )


def load_experiment(target: str | Path) -> Experiment:
    """Load and check a launch target (see the module docstring)."""
    hardware_path, json_path = resolve_target(target)
    hw = _read_yaml(hardware_path)
    cfg = _read_json(json_path)
    cameras, encoder, hw_extra = _parse_hardware(hardware_path, hw)
    configuration, subjects, directory, json_extra = _parse_json(json_path, cfg)
    return Experiment(
        hardware_path=hardware_path,
        json_path=json_path,
        cameras=cameras,
        encoder=encoder,
        configuration=configuration,
        subjects=subjects,
        experiment_directory=directory,
        hardware_extra=hw_extra,
        json_extra=json_extra,
    )


# ---------------------------------------------------------------- reading
def _read_settings(path: Path) -> str:
    try:
        return read_text(path, MAX_SETTINGS_BYTES)
    except UnicodeDecodeError as exc:
        raise ExperimentError(f"{path}: cannot read: {exc}") from None
    except OSError as exc:
        text = str(exc) if str(path) in str(exc) else f"{path}: cannot read: {exc}"
        raise ExperimentError(text) from None


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    text = _read_settings(path)
    try:
        data = _bounded_yaml(text)
    except _YamlRefused as exc:
        raise ExperimentError(f"{path}{exc.where}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ExperimentError(f"{path}{where}: invalid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise ExperimentError(f"{path}: expected a mapping of settings at the top")
    return data


class _YamlRefused(Exception):
    def __init__(self, problem: str, mark: Any = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.where = f" line {mark.line + 1}" if mark is not None else ""


def _bounded_yaml(text: str) -> Any:
    """``yaml.safe_load`` that refuses alias bombs, cycles and deep nesting.

    The document is composed into nodes first (aliases are shared nodes there, so
    composing is linear in the text), measured — values after alias expansion,
    nesting depth — and only then constructed.
    """
    import yaml

    class Loader(yaml.SafeLoader):
        depth = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            self.depth += 1
            try:
                if self.depth > MAX_DEPTH + 1:  # (+1: the scalars of the last level)
                    mark = self.peek_event().start_mark
                    raise _YamlRefused(_too_deep(), mark)
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

    loader = Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _measure(node, {}, set(), 1)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _too_deep() -> str:
    return f"nested deeper than {MAX_DEPTH} levels"


def _measure(node: Any, memo: dict[int, tuple[int, int]], active: set, depth: int):
    """(values, levels) of a YAML node once its aliases are expanded, memoized per
    node, so a bomb of 9 aliases to 9 aliases... is measured in a few steps."""
    import yaml

    key = id(node)
    if key in active:
        raise _YamlRefused(
            "an alias refers to the value that contains it", node.start_mark
        )
    if key not in memo:
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        else:
            children = []
        active.add(key)
        size, levels = 1, 1 if children else 0
        for child in children:
            child_size, child_levels = _measure(child, memo, active, depth + 1)
            size += child_size
            levels = max(levels, 1 + child_levels)
            if size > MAX_VALUES:
                raise _YamlRefused(
                    f"expands to more than {MAX_VALUES} values (aliases); refused",
                    node.start_mark,
                )
        active.discard(key)
        memo[key] = (size, levels)
    size, levels = memo[key]
    if depth - 1 + levels > MAX_DEPTH:
        raise _YamlRefused(_too_deep(), node.start_mark)
    return memo[key]


_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"(\s*:)?|[\[\]{}]')


def _json_depth_check(path: Path, text: str) -> None:
    """Refuse nesting deeper than :data:`MAX_DEPTH` before parsing, naming the keys
    that lead there (``json.loads`` would raise RecursionError, far deeper)."""
    keys: list[str | None] = []
    for m in _JSON_TOKEN.finditer(text):
        token = m.group(0)
        if token in "[{":
            keys.append(None)
            if len(keys) > MAX_DEPTH:
                where = ".".join(k for k in keys if k is not None)
                at = f" (at {where!r})" if where else ""
                raise ExperimentError(f"{path}: {_too_deep()}{at}")
        elif token in "]}":
            if keys:
                keys.pop()
        elif m.group(1) and keys:  # "key":
            with contextlib.suppress(ValueError):
                keys[-1] = str(json.loads(token[: token.rindex('"') + 1]))


def _read_json(path: Path) -> dict[str, Any]:
    text = _read_settings(path)
    _json_depth_check(path, text)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ExperimentError(
            f"{path} line {exc.lineno}: invalid JSON: {exc.msg}"
        ) from None
    except RecursionError:  # (cannot happen below MAX_DEPTH; never a traceback)
        raise ExperimentError(f"{path}: {_too_deep()}") from None
    if not isinstance(data, dict):
        raise ExperimentError(f"{path}: expected a JSON object at the top")
    return data


# ---------------------------------------------------------------- hardware
def _parse_hardware(
    path: Path, hw: dict[str, Any]
) -> tuple[list[CameraSpec], EncoderSpec | None, dict[str, Any]]:
    raw_cams = hw.get("cameras") or []
    if not isinstance(raw_cams, list):
        raise ExperimentError(f"{path}: 'cameras' must be a list of cameras")
    cameras = [_parse_camera(path, f"cameras[{i}]", c) for i, c in enumerate(raw_cams)]
    encoder = None
    if hw.get("encoder") is not None:
        encoder = _parse_encoder(path, hw["encoder"])
    if not cameras and encoder is None:
        raise ExperimentError(f"{path}: no 'cameras' and no 'encoder' to record")
    _check_ids(path, cameras, encoder)
    primaries = [f"cameras[{i}] ({c.id})" for i, c in enumerate(cameras) if c.primary]
    if encoder is not None and encoder.primary:
        primaries.append(f"encoder ({encoder.id})")
    if not primaries:
        raise ExperimentError(
            f"{path}: no device has 'primary: true' (exactly one must lead the run)"
        )
    if len(primaries) > 1:
        raise ExperimentError(
            f"{path}: several devices have 'primary: true': {', '.join(primaries)} "
            f"(exactly one must lead the run)"
        )
    extra = {k: v for k, v in hw.items() if k not in ("cameras", "encoder")}
    return cameras, encoder, extra


def _check_ids(path: Path, cameras: list[CameraSpec], encoder: EncoderSpec | None):
    seen: dict[str, int] = {}
    for i, cam in enumerate(cameras):
        if cam.id in RESERVED_IDS:
            raise ExperimentError(
                f"{path}: cameras[{i}].id {cam.id!r} is reserved "
                f"(used by {'the encoder' if cam.id in ('encoder', 'treadmill') else 'the run'})"
            )
        if cam.id in seen:
            j = seen[cam.id]
            raise ExperimentError(
                f"{path}: cameras[{j}] (name {cameras[j].name!r}) and cameras[{i}] "
                f"(name {cam.name!r}) both have id {cam.id!r}; camera ids must be "
                f"unique (each is the camera's device id in the data queue)"
            )
        seen[cam.id] = i


def _parse_camera(path: Path, where: str, raw: Any) -> CameraSpec:
    if not isinstance(raw, dict):
        raise ExperimentError(f"{path}: {where} must be a mapping, got {raw!r}")
    name = _opt_str(path, where, raw, "name")
    cam_id = _opt_str(path, where, raw, "id") or name
    if not cam_id:
        raise ExperimentError(f"{path}: {where} needs an 'id' (or a 'name')")
    where = f"{where} ({cam_id})"
    name = name or cam_id
    backend = str(raw.get("backend", "")).strip().lower()
    if backend not in BACKENDS:
        raise ExperimentError(
            f"{path}: {where}.backend must be one of {', '.join(BACKENDS)}, "
            f"got {raw.get('backend')!r}"
        )
    props = raw.get("properties") or {}
    if not isinstance(props, dict):
        raise ExperimentError(f"{path}: {where}.properties must be a mapping")
    fps = _opt_number(path, where, raw, "fps")
    if fps is None:
        fps = _opt_number(path, f"{where}.properties", props, "fps")
    _opt_number(path, f"{where}.properties", props, "exposure_ms")  # checked only
    width = _opt_int(path, where, raw, "width") or _opt_int(
        path, f"{where}.properties", props, "width"
    )
    height = _opt_int(path, where, raw, "height") or _opt_int(
        path, f"{where}.properties", props, "height"
    )
    device: int | str | None = None
    if backend == "opencv":
        device = _opencv_device(path, where, raw)
    config = _opt_str(path, where, raw, "configuration_path")
    mm_path = _opt_str(path, where, raw, "micromanager_path")
    default_kind = "tiff" if backend == "micromanager" else "mp4"
    output = _parse_output(path, where, raw.get("output"), name, default_kind)
    if output.kind == "csv":
        raise ExperimentError(
            f"{path}: {where}.output.file_type must be ome.tiff, mp4 or avi, got 'csv'"
        )
    if backend == "opencv" and output.kind == "tiff":
        raise ExperimentError(
            f"{path}: {where}.output.file_type: opencv cameras record mp4 or avi"
        )
    return CameraSpec(
        id=cam_id,
        name=name,
        backend=backend,
        primary=_bool(path, where, raw, "primary"),
        output=output,
        fps=fps,
        configuration_path=_relative_to(path, config),
        micromanager_path=_relative_to(path, mm_path),
        properties=dict(props),
        device=device,
        width=width,
        height=height,
        extra={k: v for k, v in raw.items() if k not in _CAMERA_KEYS},
    )


def _opencv_device(path: Path, where: str, raw: dict[str, Any]) -> int | str:
    if _bool(path, where, raw, "simulated"):
        return "sim"
    device = raw.get("device", raw.get("device_index"))
    if device is None:
        return 0
    if isinstance(device, bool) or not isinstance(device, (int, str)):
        raise ExperimentError(
            f"{path}: {where}.device must be a camera index, a path/URL or 'sim', "
            f"got {device!r}"
        )
    if isinstance(device, str) and device.strip().isdigit():
        return int(device)
    if isinstance(device, str) and device.strip().lower() == "sim":
        return "sim"
    if isinstance(device, str) and "://" not in device:
        return str(_relative_to(path, device))
    return device


def _parse_output(
    path: Path, where: str, raw: Any, default_suffix: str, default_kind: str
) -> Output:
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ExperimentError(f"{path}: {where}.output must be a mapping")
    file_type = str(raw.get("file_type") or default_kind).strip().lower().lstrip(".")
    kind = "csv" if file_type == "csv" else _FILE_TYPES.get(file_type)
    if kind is None:
        raise ExperimentError(
            f"{path}: {where}.output.file_type must be ome.tiff, mp4 or avi, "
            f"got {raw.get('file_type')!r}"
        )
    suffix = _opt_str(path, f"{where}.output", raw, "suffix") or default_suffix
    bids = _opt_str(path, f"{where}.output", raw, "bids_type")
    fourcc = _opt_str(path, f"{where}.output", raw, "fourcc")
    compression = _compression(path, where, raw, kind)
    # both become parts of a path: one name each, or a file lands outside the run
    suffix = _name(path, f"{where}.output", "suffix", suffix)
    bids = _name(path, f"{where}.output", "bids_type", bids or "")
    return Output(
        bids or ("func" if kind == "tiff" else "beh"), kind, suffix, fourcc, compression
    )


def _compression(path: Path, where: str, raw: dict[str, Any], kind: str) -> str:
    """``output.compression``: none, deflate, zstd or jpegxl, for an ome.tiff only."""
    value = raw.get("compression")
    try:
        codec = parse_compression(value)
    except ValueError as exc:
        raise ExperimentError(f"{path}: {where}.output.compression: {exc}") from None
    if codec and kind != "tiff":
        raise ExperimentError(
            f"{path}: {where}.output.compression applies to ome.tiff files only "
            f"(this output is {kind})"
        )
    return codec


def _name(path: Path, where: str, key: str, value: str) -> str:
    """A folder or file-name part: letters and digits only (no '/', '..', drive)."""
    if not value:
        return value
    try:
        return validate_label(key, value)
    except ValueError as exc:
        raise ExperimentError(
            f"{path}: {where}.{key} must be one name of letters and digits "
            f"(it becomes part of a file path), got {value!r}: {exc}"
        ) from None


def _parse_encoder(path: Path, raw: Any) -> EncoderSpec:
    where = "encoder"
    if not isinstance(raw, dict):
        raise ExperimentError(f"{path}: 'encoder' must be a mapping, got {raw!r}")
    kind = str(raw.get("type", "")).strip().lower()
    if kind not in ENCODER_TYPES:
        raise ExperimentError(
            f"{path}: encoder.type must be one of {', '.join(ENCODER_TYPES)}, "
            f"got {raw.get('type')!r}"
        )
    dev = _bool(path, where, raw, "development_mode")
    port = _opt_str(path, where, raw, "port")
    if not dev and not port:
        raise ExperimentError(
            f"{path}: encoder.port is required unless development_mode is true"
        )
    # datakit anchors the wheel on device 'encoder' and the treadmill on ids
    # containing 'treadmill': the id is fixed by the type
    enc_id = "encoder" if kind == "wheel" else "treadmill"
    interval = _opt_number(path, where, raw, "sample_interval_ms") or 20.0
    return EncoderSpec(
        id=enc_id,
        type=kind,
        port=port,
        baudrate=_opt_int(path, where, raw, "baudrate")
        or (57600 if kind == "wheel" else 192000),
        cpr=_opt_int(path, where, raw, "cpr") or 2400,
        diameter_mm=_opt_number(path, where, raw, "diameter_mm") or 80.0,
        sample_interval_ms=interval,
        development_mode=dev,
        primary=_bool(path, where, raw, "primary"),
        output=_parse_output(path, where, raw.get("output"), kind, "csv"),
        extra={k: v for k, v in raw.items() if k not in _ENCODER_KEYS},
    )


# ---------------------------------------------------------------- experiment.json
def _parse_json(
    path: Path, data: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]], Path | None, dict[str, Any]]:
    configuration = data.get("Configuration", {})
    if not isinstance(configuration, dict):
        raise ExperimentError(f"{path}: 'Configuration' must be an object")
    configuration = dict(configuration)
    if "duration" in configuration:
        duration = configuration["duration"]
        if isinstance(duration, bool) or not isinstance(duration, (int, float)):
            raise ExperimentError(
                f"{path}: Configuration.duration must be a positive number of "
                f"seconds, got {duration!r}"
            )
        if not (math.isfinite(duration) and 0 < duration <= MAX_DURATION_S):
            raise ExperimentError(
                f"{path}: Configuration.duration must be a positive number of "
                f"seconds up to {MAX_DURATION_S:.0f} (7 days), got {duration!r}"
            )
    if "start_on_trigger" in configuration:
        configuration["start_on_trigger"] = _bool(
            path, "Configuration", configuration, "start_on_trigger"
        )
    subjects = data.get("Subjects")
    if not isinstance(subjects, dict) or not subjects:
        raise ExperimentError(
            f"{path}: 'Subjects' must be an object with at least one subject"
        )
    for sid, meta in subjects.items():
        if not isinstance(meta, dict):
            raise ExperimentError(f"{path}: Subjects.{sid} must be an object")
        for key in ("session", "task"):
            value = meta.get(key)
            if value is not None and not isinstance(value, (str, int)):
                raise ExperimentError(
                    f"{path}: Subjects.{sid}.{key} must be a string or number, "
                    f"got {value!r}"
                )
    # mesofield's GUI hint (which Configuration keys it shows): checked, not used
    keys = data.get("DisplayKeys", [])
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ExperimentError(f"{path}: 'DisplayKeys' must be a list of names")
    directory = data.get("experiment_directory")
    if directory is not None and not isinstance(directory, str):
        raise ExperimentError(f"{path}: 'experiment_directory' must be a path string")
    extra = {k: v for k, v in data.items() if k not in _JSON_KEYS}
    return (
        configuration,
        {str(k): dict(v) for k, v in subjects.items()},
        _relative_to(path, directory),
        extra,
    )


# ---------------------------------------------------------------- value helpers
def _bool(path: Path, where: str, raw: Mapping[str, Any], key: str) -> bool:
    """YAML/JSON truth, strings included: ``primary: "false"`` means false."""
    value = raw.get(key, False)
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    if value is None:
        return False
    raise ExperimentError(f"{path}: {where}.{key} must be true or false, got {value!r}")


def _opt_str(path: Path, where: str, raw: Mapping[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ExperimentError(f"{path}: {where}.{key} must be a string, got {value!r}")
    return str(value)


def _opt_number(
    path: Path, where: str, raw: Mapping[str, Any], key: str
) -> float | None:
    """A positive, finite number no larger than ``LIMITS[key]`` (when it has one)."""
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ExperimentError(
            f"{path}: {where}.{key} must be a positive number, got {raw.get(key)!r}"
        )
    limit = LIMITS.get(key, math.inf)
    try:
        number = float(value)
    except OverflowError:  # an int beyond float range
        number = math.inf
    if not (math.isfinite(number) and 0 < number <= limit):
        what = (
            f"a finite number in (0, {limit:.0f}]"
            if math.isfinite(limit)
            else "a finite positive number"
        )
        raise ExperimentError(f"{path}: {where}.{key} must be {what}, got {value!r}")
    return number


def _opt_int(path: Path, where: str, raw: Mapping[str, Any], key: str) -> int | None:
    value = _opt_number(path, where, raw, key)
    if value is None:
        return None
    if value != int(value):
        raise ExperimentError(
            f"{path}: {where}.{key} must be a whole number, got {raw.get(key)!r}"
        )
    return int(value)


def _relative_to(path: Path, value: str | None) -> Path | None:
    """A path from the files, relative to the file's folder when not absolute."""
    if value is None:
        return None
    p = Path(value).expanduser()
    return p if p.is_absolute() else path.parent / p


def _cell(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return value
