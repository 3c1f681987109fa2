"""A TCP port on 127.0.0.1 forwarded to a unix socket: how a container on the
host's network reaches the tests' PostgreSQL, which listens on a unix socket
only (``project.embedded_pg``). Run as its own process (asyncio, no gevent):
``python -m tests.containers.tcp_forward SOCKET``; prints the port, serves
until killed. PostgreSQL still checks the password (SCRAM) of every login.
"""

import asyncio
import sys


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def _serve(socket_path: str) -> None:
    async def forward(reader, writer) -> None:
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(socket_path)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    server = await asyncio.start_server(forward, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(_serve(sys.argv[1]))
