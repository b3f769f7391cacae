"""Objects over a pipe between the bridge and its store's writer process: each a frame of a
4-byte length, then the object's pickle (both ends are this bridge's own code)."""

from __future__ import annotations

import pickle
import struct
from typing import IO, Any

HEADER = struct.Struct("!I")


def read_frame(stream: IO[bytes]) -> Any:
    """The next frame's object, or None at the end of the stream."""
    head = stream.read(HEADER.size)
    if len(head) < HEADER.size:
        return None
    (size,) = HEADER.unpack(head)
    data = stream.read(size)
    if len(data) < size:
        return None
    return pickle.loads(data)


def frame(value: Any) -> bytes:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(data)) + data
