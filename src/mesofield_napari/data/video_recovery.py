"""Recovery for videos: the sidecar lists only the frames that really decode.

A video's journal line is written when its frame was handed to the encoder, not when
the muxer put it on disk (fragmented MP4 writes a fragment per keyframe, ≤ 1 s), and
a file whose index was never written (OpenCV's MP4 after a kill) holds nothing
decodable at all. So :func:`trim_to_decodable` counts the frames that decode and
trims the sidecar payload to them; if not one frame of any file decodes the video
is lost and :class:`~.video_check.VideoLostError` says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .codecs import VIDEO_EXTENSIONS
from .paths import with_name_suffix
from .video_check import VideoLostError, decodable_frames


def is_video(path: Path) -> bool:
    return path.name.lower().endswith(VIDEO_EXTENSIONS)


def position_file(data: Path, key: str, keys: list[str]) -> Path:
    """The video holding position ``key`` (``<stem>_<key><ext>`` when several)."""
    if len(keys) > 1 or not data.exists():
        candidate = with_name_suffix(data, f"_{key}")
        if candidate.exists() or len(keys) > 1:
            return candidate
    return data


def trim_to_decodable(
    data: Path, payload: dict[str, Any]
) -> tuple[dict[str, Any], str]:
    """``payload`` with each frame list cut to the frames that decode, and a note
    saying what was cut ("" when nothing was). Raises :class:`VideoLostError` when
    no frame decodes anywhere."""
    if isinstance(payload.get("frame_metadatas"), list):
        lists = {"frame_metadatas": data}
    else:
        keys = [k for k, v in payload.items() if isinstance(v, list)]
        lists = {k: position_file(data, k, keys) for k in keys}
    notes: list[str] = []
    total = listed_total = 0
    for key, video in lists.items():
        listed = len(payload[key])
        found = decodable_frames(video) if video.exists() else 0
        total += found
        listed_total += listed
        if found < listed:
            payload[key] = payload[key][:found]
            notes.append(f"{video.name}: {found} of {listed} frame(s) decode")
    if total == 0 and listed_total:
        names = ", ".join(sorted({p.name for p in lists.values()})) or data.name
        raise VideoLostError(
            f"the video is lost: no frame of {names} decodes "
            "(killed before its first fragment reached the disk, or an MP4 written "
            "without a crash-safe index)"
        )
    return payload, "; ".join(notes)
