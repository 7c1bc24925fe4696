"""A private ``redis-server`` a test owns: started on a free 127.0.0.1 port, killed by PID, restarted.

The machine's shared Redis is never stopped; fault tests stop this one instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
from dataclasses import dataclass

REDIS_SERVER = shutil.which("redis-server")


@dataclass
class PrivateRedis:
    port: int
    proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        assert REDIS_SERVER is not None
        self.proc = await asyncio.create_subprocess_exec(
            REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )
        async with asyncio.timeout(10):
            while True:
                # Ready means it answers a command, not only that it accepts a connection.
                try:
                    reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                except OSError:
                    await asyncio.sleep(0.02)
                    continue
                try:
                    writer.write(b"PING\r\n")
                    await writer.drain()
                    if await reader.readline() == b"+PONG\r\n":
                        return
                except OSError:
                    pass
                finally:
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()
                await asyncio.sleep(0.02)

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
