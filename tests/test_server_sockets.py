"""The sockets `runbooks sim`, `runbooks relay` and `runbooks up` serve on answer small
requests at once: their connections have TCP_NODELAY, or each answer on a kept-alive
connection waits about 40 ms for a delayed ACK (it did, before `bind` named the protocol)."""

from __future__ import annotations

import asyncio
import socket

from local_stack.servers import bind


def test_connections_accepted_on_a_bound_socket_send_at_once() -> None:
    async def accepted_nodelay() -> int:
        sock = bind("127.0.0.1", 0, "--port")
        loop = asyncio.get_running_loop()
        seen: asyncio.Future[int] = loop.create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                conn = transport.get_extra_info("socket")
                seen.set_result(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()

        server = await loop.create_server(Probe, sock=sock)
        async with server:
            _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
            try:
                return await asyncio.wait_for(seen, 10)
            finally:
                writer.close()

    assert asyncio.run(accepted_nodelay()) != 0
