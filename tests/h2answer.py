"""A loopback HTTP/2 destination (the h2 package's state machine) for tests and the bench."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import h2.config
import h2.connection
import h2.events

OK = b'{"ok":true}'


async def answer_h2(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    on_request: Callable[[list[tuple[bytes, bytes]]], None] | None = None,
) -> None:
    """Answer every stream of the connection 200 with ``OK``; ``on_request`` is told each
    request's headers."""
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    connection.initiate_connection()
    writer.write(connection.data_to_send())
    while data := await reader.read(65536):
        for event in connection.receive_data(data):
            if isinstance(event, h2.events.RequestReceived) and on_request is not None:
                on_request(list(event.headers))
            elif isinstance(event, h2.events.DataReceived):
                connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                headers = [(":status", "200"), ("content-length", str(len(OK)))]
                connection.send_headers(event.stream_id, headers)
                connection.send_data(event.stream_id, OK, end_stream=True)
        writer.write(connection.data_to_send())
        await writer.drain()
