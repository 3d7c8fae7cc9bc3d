"""One frame's metadata as journal JSON, in one pass of the C encoder.

``store_frame_metadata`` used to rebuild every frame's ``FrameMetaV1`` as plain Python
types (:func:`~.sidecar.to_jsonable`, a recursive walk) and then encode the copy. The
C encoder already writes dicts, lists, tuples (namedtuples such as ``PropertyValue``
included, as lists), strings, numbers and ``None`` exactly as ``to_jsonable`` turns
them; only the other objects (``MDAEvent``, numpy scalars and arrays, datetimes,
paths, pydantic models) need the conversion, and the encoder hands just those to
``to_jsonable``. The one difference is dictionary keys: ``to_jsonable`` writes
``str(key)``, the encoder ``true``/``null`` for ``True``/``None`` keys and nothing at
all for other objects. So the fast path runs only when every key of the metadata is a
plain ``str`` (a walk over the containers, not the leaves); otherwise the old
conversion does. The
result parses to the same value as before, so the journal, ``recover`` and the
legacy sidecar (re-encoded from the parsed journal) are unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .sidecar import to_jsonable

__all__ = ["frame_meta_json"]

_ENCODER = json.JSONEncoder(separators=(",", ":"), default=to_jsonable)
_CONTAINERS = (dict, list, tuple)


def _plain_keys(obj: Any) -> bool:
    """True when every dict inside ``obj`` has only ``str`` keys."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if type(key) is not str:
                return False
            if isinstance(value, _CONTAINERS) and not _plain_keys(value):
                return False
        return True
    for value in obj:  # list or tuple
        if isinstance(value, _CONTAINERS) and not _plain_keys(value):
            return False
    return True


def frame_meta_json(
    meta: Mapping[str, Any] | None,
    mda_event: dict[str, int],
    extra: Mapping[str, Any] | None = None,
) -> str:
    """Compact JSON of ``to_jsonable(dict(meta))`` with ``mda_event`` and ``extra`` set.

    Equal (once parsed) to what ``json.dumps(entry, separators=(",", ":"))`` of the
    converted entry gave, key order included.
    """
    entry = dict(meta or {})
    # only ``meta`` went through to_jsonable before: ``mda_event`` (whose keys are
    # useq's str-enum axes) and ``extra`` were encoded as they are, as here
    if _plain_keys(entry):
        entry["mda_event"] = mda_event
        if extra:
            entry.update(extra)
        try:
            return _ENCODER.encode(entry)
        except (TypeError, ValueError):  # e.g. a reference cycle: the old path says
            pass
    slow = to_jsonable(dict(meta or {}))
    slow["mda_event"] = mda_event
    if extra:
        slow.update(extra)
    return json.dumps(slow, separators=(",", ":"))
