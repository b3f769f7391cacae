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


class Frames:
    """The objects of a stream that arrives in pieces (an event loop's pipe): ``feed`` each
    piece, and get the frames it completed."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        buffer = self._buffer
        buffer += data
        done: list[Any] = []
        start = 0
        while len(buffer) - start >= HEADER.size:
            (size,) = HEADER.unpack_from(buffer, start)
            end = start + HEADER.size + size
            if len(buffer) < end:
                break
            done.append(pickle.loads(bytes(buffer[start + HEADER.size : end])))
            start = end
        del buffer[:start]
        return done
