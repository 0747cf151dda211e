"""Single flight across replicas: a lease says which replica follows a job upstream, and the
others wait for its "done" news over pub/sub (with a poll under it)."""

from __future__ import annotations

import asyncio
import contextlib

from sync_gateway.store.redis.connection import Link, Unavailable
from sync_gateway.store.redis.keys import PREFIX, RELEASE, RENEW, ms


class RedisCoordinator:
    """Leases on watches, and news of finished jobs over pub/sub (with a poll under it)."""

    def __init__(self, link: Link, replica: str, lease: float, check: float) -> None:
        self.link = link
        self.token = replica.encode()
        self.lease = lease
        self.check = check
        self.held: dict[str, bytes] = {}  # lease key -> token, renewed by the backend
        self._done: dict[str, set[asyncio.Future[None]]] = {}
        self._acquire = link.client.register_script(RENEW)
        self._release = link.client.register_script(RELEASE)

    async def acquire(self, key: str) -> bool:
        lkey = PREFIX + "lease:" + key
        try:
            got = await self.link.run(
                "acquire", lambda r: self._acquire([lkey], [self.token, ms(self.lease)], r)
            )
        except Unavailable:
            return True  # on our own: every replica follows its jobs itself
        if got:
            self.held[lkey] = self.token
        return bool(got)

    async def release(self, key: str) -> None:
        lkey = PREFIX + "lease:" + key
        if self.held.pop(lkey, None) is None:
            return
        with contextlib.suppress(Unavailable):
            await self.link.run("release", lambda r: self._release([lkey], [self.token], r))

    async def publish(self, key: str) -> None:
        with contextlib.suppress(Unavailable):
            await self.link.run("publish", lambda r: r.publish(PREFIX + "done:" + key, b"1"))

    async def wait_elsewhere(self, key: str, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        done: asyncio.Future[None] = loop.create_future()
        self._done.setdefault(key, set()).add(done)
        rkey, lkey = PREFIX + "result:" + key, PREFIX + "lease:" + key

        try:
            while True:
                try:
                    result, lease = await self.link.pipelined(
                        "wait", lambda p: p.exists(rkey), lambda p: p.exists(lkey)
                    )
                except Unavailable:
                    return False  # follow the job here
                if result:
                    return True
                if not lease:
                    return False  # its holder is gone: take the watch over
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(done), min(remaining, self.check))
                if done.done():
                    return True
        finally:
            waiters = self._done.get(key)
            if waiters is not None:
                waiters.discard(done)
                if not waiters:
                    del self._done[key]
            if not done.done():
                done.cancel()

    def announced(self, key: str) -> None:
        """A replica published that the job's result is in Redis."""
        for done in self._done.get(key, ()):
            if not done.done():
                done.set_result(None)
