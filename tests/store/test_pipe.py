"""Frames over the pipe between the bridge and its SQLite writer process."""

from __future__ import annotations

import io

from bridge.store.pipe import Frames, frame, read_frame

OBJECTS = [("ingest", "x" * 70_000), [(True, 1), (False, ValueError("no"))], None, {"a": 1}]


def test_a_stream_read_whole_gives_each_frame_then_none_at_its_end() -> None:
    stream = io.BytesIO(b"".join(frame(o) for o in OBJECTS))
    got = [read_frame(stream) for _ in OBJECTS]
    assert got[0] == OBJECTS[0] and got[2:] == OBJECTS[2:]
    assert read_frame(stream) is None


def test_a_stream_that_arrives_in_pieces_of_any_size_gives_the_same_frames_in_order() -> None:
    data = b"".join(frame(o) for o in OBJECTS)
    for size in (1, 3, 4, 5, 4096, 65_536, len(data)):
        frames = Frames()
        got = []
        for start in range(0, len(data), size):
            got += frames.feed(data[start : start + size])
        assert len(got) == len(OBJECTS), size
        assert got[0] == OBJECTS[0] and got[2:] == OBJECTS[2:]
        assert isinstance(got[1][1][1], ValueError)


def test_a_frame_not_yet_whole_gives_nothing_until_its_last_byte() -> None:
    data = frame("hello")
    frames = Frames()
    assert frames.feed(data[:-1]) == []
    assert frames.feed(data[-1:]) == ["hello"]
    assert frames.feed(b"") == []
