"""Experiment runs: several cameras and an encoder in one run, on one clock (issue 13).

Real parts throughout: each Micro-Manager camera is a real ``UniMMCore`` with the
simulated camera and the real MDA runner, the pupil camera a real capture thread, the
wheel a real serial reader (pyserial's ``loop://``) or mesofield's development mode;
the run is read back with tifffile/OpenCV and loaded by mesofield's own datakit.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import tifffile
from mesofield.datakit.core import Dataset
from mesokit_schema import find_files, iter_sessions

from _helpers import read_video, sim_index, wait_until
from mesofield_napari.data.writer.codecs import ContrastMapping
from mesofield_napari.devices.sim_camera import SimulatedMesoscopeCamera
from mesofield_napari.experiment import (
    ExperimentError,
    ExperimentRun,
    load_experiment,
    record_experiment,
)

SUBJECT = {
    "sex": "F",
    "genotype": "aldh1l1-gcamp8s",
    "DOB": "2025-01-02",
    "DOS": "2025-06-20",
    "session": "10",
    "task": "widefield",
    "weight": "20.30",
}
THREE_DEVICES = """\
encoder:
  type: wheel
  port: COM4
  development_mode: true
  sample_interval_ms: 20
cameras:
  - id: mesoscope
    name: meso
    backend: micromanager
    primary: "true"
    fps: 40
    properties: {width: 64, height: 48}
    output: {bids_type: func, file_type: ome.tiff}
  - id: pupil
    name: pupil
    backend: micromanager
    primary: "false"
    fps: 25
    properties: {width: 64, height: 48}
    output: {bids_type: beh, file_type: mp4}
"""
NO_TREADMILL = "No EncoderData payloads found in dataqueue"


def write_experiment(folder: Path, hardware: str, duration: float = 1.0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hardware.yaml").write_text(hardware, encoding="utf-8")
    config = {
        "Configuration": {
            "experimenter": "JG",
            "protocol": "P7",
            "duration": duration,
            "start_on_trigger": False,
            "led": "470nm",
        },
        "Subjects": {"STREHAB07": SUBJECT, "STREHAB09": {**SUBJECT, "sex": "M"}},
        "DisplayKeys": ["subject", "session"],
    }
    (folder / "experiment.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.setenv("PYMM_SIGNALS_BACKEND", "psygnal")
    monkeypatch.setenv("MESOFIELD_FOURCC", "mp4v")


@pytest.fixture(scope="module")
def three_device_run(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYMM_SIGNALS_BACKEND", "psygnal")
        mp.setenv("MESOFIELD_FOURCC", "mp4v")
        rig = write_experiment(tmp_path_factory.mktemp("rig"), THREE_DEVICES)
        out = tmp_path_factory.mktemp("experiment")
        result = record_experiment(rig, out=out)
    return result, out


def dataqueue(result) -> pd.DataFrame:
    return pd.read_csv(result["dataqueue"], dtype={"payload": str, "device_ts": str})


def files_by_device(result) -> dict[str, dict]:
    return {f["device_id"]: f for f in result["files"]}


def test_every_file_holds_what_its_camera_produced(three_device_run):
    result, _ = three_device_run
    assert result["ok"], result["errors"]
    files = files_by_device(result)
    assert set(files) == {"mesoscope", "pupil", "encoder"}
    meso = files["mesoscope"]
    assert meso["path"].endswith("_meso.ome.tiff") and "/func/" in meso["path"]
    assert meso["frames"] == 40  # the primary's duration x fps
    stack = tifffile.imread(meso["path"])
    side = json.loads(Path(meso["sidecar"]).read_text())["p0"]
    assert stack.shape == (40, 48, 64) and len(side) == 40
    camera = SimulatedMesoscopeCamera((48, 64), seed=0)  # cameras[0]
    for plane, entry in zip(stack, side, strict=True):
        assert np.array_equal(plane, camera.frame(sim_index(entry)))

    pupil = files["pupil"]
    assert pupil["path"].endswith("_pupil.mp4") and "/beh/" in pupil["path"]
    frames, fps, _ = read_video(pupil["path"])
    side = json.loads(Path(pupil["sidecar"]).read_text())["p0"]
    assert 0 < len(frames) == len(side) == pupil["frames"] <= 25
    assert fps == 25
    pupil_cam = SimulatedMesoscopeCamera((48, 64), seed=1)  # cameras[1]
    to8 = ContrastMapping(bit_depth=12)
    for got, entry in zip(frames, side, strict=True):
        want = to8.to_uint8(pupil_cam.frame(sim_index(entry)))
        assert np.abs(got[..., 0].astype(int) - want).mean() < 4  # mp4v is lossy

    wheel = pd.read_csv(files["encoder"]["path"])
    assert wheel.columns.tolist() == ["Clicks", "Time", "Speed"]
    assert len(wheel) == files["encoder"]["frames"] > 0
    assert wheel["Time"].is_monotonic_increasing


def test_one_queue_row_per_frame_of_every_camera_plus_encoder_rows(three_device_run):
    result, _ = three_device_run
    dq = dataqueue(result)
    assert dq["queue_elapsed"].is_monotonic_increasing
    for device_id in ("mesoscope", "pupil"):
        f = files_by_device(result)[device_id]
        side = json.loads(Path(f["sidecar"]).read_text())["p0"]
        rows = dq[dq["device_id"] == device_id]
        assert len(rows) == f["frames"]
        numbers = [int(e["camera_metadata"]["ImageNumber"]) for e in side]
        assert rows["payload"].astype(int).tolist() == numbers
    wheel = pd.read_csv(files_by_device(result)["encoder"]["path"])
    enc = dq[dq["device_id"] == "encoder"]
    assert enc["payload"].astype(int).tolist() == wheel["Clicks"].tolist()
    stamps = pd.to_datetime(enc["device_ts"], format="ISO8601")
    assert stamps.is_monotonic_increasing and stamps.iloc[0].utcoffset() is not None


def test_run_files_carry_the_subject_and_every_device(three_device_run):
    result, _ = three_device_run
    run_dir = Path(result["run_dir"])
    (config,) = run_dir.glob("*_configuration.csv")
    params = dict(pd.read_csv(config, dtype=str).values.tolist())
    assert (params["subject"], params["session"], params["task"]) == (
        "STREHAB07",
        "10",
        "widefield",
    )
    for key in ("sex", "genotype", "DOB", "DOS", "weight"):
        assert params[key] == SUBJECT[key]
    assert params["experimenter"] == "JG" and params["led"] == "470nm"
    (stamps,) = run_dir.glob("*_timestamps.csv")
    rows = pd.read_csv(stamps)
    assert sorted(rows["device_id"]) == ["encoder", "mesoscope", "pupil", "run"]
    assert rows["started"].notna().all() and rows["stopped"].notna().all()


def test_manifest_validates_and_declares_each_producer(three_device_run):
    result, out = three_device_run
    ((path, manifest),) = list(iter_sessions(out))
    assert str(path) == result["manifest"]
    assert manifest.acquisition_complete
    assert manifest.session.subject == "STREHAB07" and manifest.session.session == "10"
    refs = {r.device_id: r for r in find_files(out)}
    assert all(r.path.is_file() for r in refs.values())
    assert refs["mesoscope"].file_type == "ome.tiff"
    assert refs["pupil"].file_type == "mp4"
    assert refs["encoder"].data_type == "wheel"
    producers = {p.device_id: p for p in manifest.producers}
    for device_id in ("mesoscope", "pupil", "encoder"):
        assert producers[device_id].dataqueue_schema.device_id == device_id
    assert producers["encoder"].calibration["cpr"] == 2400


def materialize(experiment: Path, allow_no_treadmill: bool = True):
    dataset = Dataset.from_directory(experiment)
    frame, errors = dataset.materialize(strict=False, return_errors=True)
    failed = errors[errors["status"] != "ok"]
    if allow_no_treadmill:
        failed = failed[
            (failed["Source"] != "treadmill") | (failed["message"] != NO_TREADMILL)
        ]
    assert failed.empty, failed[["Source", "message"]].to_string()
    return frame, errors


def test_run_loads_in_datakit(three_device_run):
    result, out = three_device_run
    frame, errors = materialize(out)
    loaded = set(errors.loc[errors["status"] == "ok", "Source"])
    assert {
        "meso_metadata",
        "pupil_metadata",
        "dataqueue",
        "wheel",
        "session_config",
    } <= loaded
    row = frame.iloc[0]
    files = files_by_device(result)
    assert len(row[("meso_metadata", "ImageNumber")]) == files["mesoscope"]["frames"]
    assert len(row[("pupil_metadata", "runner_time_ms")]) == files["pupil"]["frames"]
    assert len(row[("wheel", "click_delta")]) == files["encoder"]["frames"]
    assert row[("dataqueue", "meta")]["master_device_id"] == "mesoscope"
    for key in ("sex", "genotype", "DOB", "DOS", "weight"):
        assert row[("session_config", key)] == SUBJECT[key]
    assert row[("session_config", "experimenter")] == "JG"


def test_a_camera_failing_mid_run_ends_the_run_cleanly(tmp_path):
    video = tmp_path / "short.avi"
    out = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"MJPG"), 30, (40, 32))
    for i in range(5):
        out.write(np.full((32, 40, 3), 20 * i, np.uint8))
    out.release()
    hardware = f"""\
cameras:
  - id: mesoscope
    name: meso
    backend: micromanager
    primary: true
    fps: 50
    properties: {{width: 64, height: 48}}
  - id: side
    backend: opencv
    device: {video}
    fps: 20
"""
    rig = write_experiment(tmp_path / "rig", hardware, duration=20)
    result = record_experiment(rig, out=tmp_path / "exp")
    assert not result["ok"]
    assert result["errors"] == [
        f"side: OpenCV camera {str(video)!r} stopped delivering frames after 5 frame(s)"
    ]
    files = files_by_device(result)
    frames, _, _ = read_video(files["side"]["path"])
    assert len(frames) == files["side"]["frames"] == 5  # nothing written is lost
    meso = files["mesoscope"]
    side = json.loads(Path(meso["sidecar"]).read_text())["p0"]
    assert 0 < len(side) == meso["frames"] < 1000  # stopped long before 20 s x 50 Hz
    dq = dataqueue(result)
    assert (dq["device_id"] == "mesoscope").sum() == meso["frames"]
    assert (dq["device_id"] == "side").sum() == 5
    ((_, manifest),) = list(iter_sessions(tmp_path / "exp"))
    assert not manifest.acquisition_complete
    assert manifest.extra["mesofield_napari"]["errors"] == result["errors"]


def test_an_opencv_camera_that_cannot_open_stops_everything_before_it_starts(
    tmp_path,
):
    hardware = THREE_DEVICES + "  - {id: side, backend: opencv, device: 99}\n"
    rig = write_experiment(tmp_path / "rig", hardware)
    with pytest.raises(ExperimentError) as info:
        record_experiment(rig, out=tmp_path / "exp")
    assert str(info.value) == (
        f"{rig / 'hardware.yaml'}: cameras[2] (side): cannot open OpenCV camera 99 "
        f"(no such device, or it is in use)"
    )
    assert not (tmp_path / "exp").exists()  # no run folder for a rig that isn't there


def test_serial_wheel_over_loop_and_stop(tmp_path):
    hardware = """\
encoder: {type: wheel, port: "loop://", baudrate: 57600, cpr: 1000, diameter_mm: 100}
cameras:
  - id: mesoscope
    name: meso
    backend: micromanager
    primary: true
    fps: 20
    properties: {width: 32, height: 32}
"""
    rig = write_experiment(tmp_path / "rig", hardware, duration=600)
    run = ExperimentRun(
        load_experiment(rig), subject="STREHAB09", task="rest", out=tmp_path / "exp"
    )
    run.start()
    encoder = run.devices["encoder"]
    encoder.serial.write(b"5\n-2\n7\n")  # the firmware's lines, through loop://
    wait_until(lambda: encoder.samples == 3, what="3 wheel samples")
    wait_until(lambda: run.status()["devices"]["mesoscope"]["frames"] >= 3)
    status = run.status()
    assert status["state"] == "running" and status["primary"] == "mesoscope"
    assert set(status["devices"]) == {"mesoscope", "encoder"}
    assert run.stop(timeout=60)
    result = run.result()
    assert result["ok"], result["errors"]
    run_dir = Path(result["run_dir"])
    assert run_dir.is_relative_to(tmp_path / "exp")  # the folder given
    assert result["subject"] == "STREHAB09" and result["task"] == "rest"
    wheel = pd.read_csv(files_by_device(result)["encoder"]["path"])
    assert wheel["Clicks"].tolist() == [5, -2, 7]
    dq = dataqueue(result)
    assert dq.loc[dq["device_id"] == "encoder", "payload"].astype(int).tolist() == [
        5,
        -2,
        7,
    ]
    meso = files_by_device(result)["mesoscope"]
    assert (dq["device_id"] == "mesoscope").sum() == meso["frames"] > 0


# datakit's own treadmill code calls a pandas API that pandas deprecates: not ours
@pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame")
def test_treadmill_rows_load_in_datakit(tmp_path):
    hardware = """\
encoder: {type: treadmill, development_mode: true, sample_interval_ms: 10}
cameras:
  - id: mesoscope
    name: meso
    backend: micromanager
    primary: true
    fps: 50
    properties: {width: 32, height: 32}
"""
    rig = write_experiment(tmp_path / "rig", hardware, duration=1)
    result = record_experiment(rig, out=tmp_path / "exp")
    assert result["ok"], result["errors"]
    dq = pd.read_csv(result["dataqueue"])
    rows = dq[dq["device_id"] == "treadmill"]
    assert len(rows) == files_by_device(result)["treadmill"]["frames"] > 0
    assert rows[["distance", "speed", "device_us"]].notna().all().all()
    frame, errors = materialize(tmp_path / "exp", allow_no_treadmill=False)
    assert "treadmill" in set(errors.loc[errors["status"] == "ok", "Source"])
    assert len(frame.iloc[0][("treadmill", "speed_mm")]) > 0


def test_a_missing_micromanager_configuration_is_one_line(tmp_path):
    hardware = THREE_DEVICES.replace(
        '    backend: micromanager\n    primary: "true"',
        '    backend: micromanager\n    configuration_path: rig.cfg\n    primary: "true"',
    )
    rig = write_experiment(tmp_path / "rig", hardware)
    with pytest.raises(ExperimentError) as info:
        record_experiment(rig, out=tmp_path / "exp")
    assert str(info.value) == (
        f"{rig / 'hardware.yaml'}: mesoscope: Micro-Manager configuration not found: "
        f"{rig / 'rig.cfg'}"
    )
    assert not (tmp_path / "exp").exists()


def test_mesofield_sample_records_here(tmp_path):
    """mesofield's own sample (ids made unique) runs on the built-in simulated camera."""
    sample = Path(__file__).parent / "data" / "mesofield_sample"
    rig = tmp_path / "rig"
    rig.mkdir()
    hardware = (sample / "hardware.yaml").read_text()
    hardware = hardware.replace(
        'id: "dev"\n    name: "devcam2"', 'id: "dev2"\n    name: "devcam2"'
    )
    (rig / "hardware.yaml").write_text(hardware)
    (rig / "devcfg.json").write_text((sample / "devcfg.json").read_text())
    with pytest.raises(ExperimentError) as info:  # its wheel is on COM4
        record_experiment(rig, duration=0.3, out=tmp_path / "exp")
    assert str(info.value).startswith(
        f"{rig / 'hardware.yaml'}: encoder: cannot open serial port 'COM4': "
    )
    (rig / "hardware.yaml").write_text(
        hardware.replace("development_mode: False", "development_mode: True")
    )
    result = record_experiment(rig, duration=0.3, out=tmp_path / "exp")
    assert result["ok"], result["errors"]
    assert (result["subject"], result["session"]) == ("STREHAB07", "10")
    files = files_by_device(result)
    assert files["dev"]["path"].endswith("_devcam1.ome.tiff")
    assert files["dev2"]["path"].endswith("_devcam2.mp4")
    assert "/func/" in files["dev2"]["path"]  # its output.bids_type
    assert files["dev"]["frames"] == 30  # 0.3 s at the default 10 ms exposure
    assert tifffile.imread(files["dev"]["path"]).shape == (30, 512, 512)


# ---------------------------------------------------------------- a lent core
def test_primary_records_on_a_lent_core_and_leaves_it_loaded(tmp_path):
    """In napari the primary may be napari-micromanager's own core: the run records
    on it as it is set up (size, exposure) and leaves its devices loaded."""
    from mesofield_napari.devices.sim_camera import create_sim_core, sim_camera
    from mesofield_napari.experiment import lendable_cores

    exp = load_experiment(write_experiment(tmp_path / "exp", THREE_DEVICES, 0.5))
    core = create_sim_core((40, 56), exposure_ms=10.0)  # not the YAML's 48x64 @ 40
    lent = lendable_cores(exp, core)
    assert lent == {"mesoscope": core}
    run = ExperimentRun(exp, out=tmp_path / "out", cores=lent)
    run.open()
    run.start()
    assert run.wait(60)
    result = run.result()
    assert result["ok"], result["errors"]
    (meso,) = [f for f in result["files"] if f["device_id"] == "mesoscope"]
    data = tifffile.imread(meso["path"])
    assert data.shape[1:] == (40, 56)  # the lent core's camera, not a new one
    assert data.shape[0] == round(0.5 * 100)  # duration x the core's own 100 fps
    cam = sim_camera(core)
    meta = json.loads(Path(meso["sidecar"]).read_text())["p0"]
    first = sim_index(meta[0])
    np.testing.assert_array_equal(data[-1], cam.frame(first + len(data) - 1))
    assert core.getCameraDevice() == "MesoCam"  # still loaded for its owner
    core.snapImage()
    assert core.getImage().shape == (40, 56)


def test_only_the_primarys_own_camera_is_lent(tmp_path):
    from pymmcore_plus.experimental.unicore import UniMMCore

    from mesofield_napari.devices import DeviceError
    from mesofield_napari.devices.sim_camera import create_sim_core
    from mesofield_napari.experiment import lendable_cores

    exp = load_experiment(write_experiment(tmp_path / "exp", THREE_DEVICES))
    assert lendable_cores(exp, None) == {}
    assert lendable_cores(exp, UniMMCore()) == {}  # no simulated camera in it
    with_config = THREE_DEVICES.replace(
        "    fps: 40\n",
        f"    fps: 40\n    configuration_path: {tmp_path / 'rig.cfg'}\n",
    )
    (tmp_path / "rig.cfg").write_text("# a rig\n")
    exp2 = load_experiment(write_experiment(tmp_path / "exp2", with_config))
    core = create_sim_core((16, 16), exposure_ms=0)
    assert lendable_cores(exp2, core) == {}  # it did not load rig.cfg
    core.startContinuousSequenceAcquisition(0)  # the user is in live view
    try:
        with pytest.raises(DeviceError, match="busy"):
            lendable_cores(exp, core)
    finally:
        core.stopSequenceAcquisition()
