"""A gunicorn worker class that runs the edge server: gunicorn's master keeps the processes
(forking, restarting a dead or stuck worker, graceful stop), each worker runs one event loop."""

from __future__ import annotations

import asyncio
import os
import sys

from gunicorn.workers.base import Worker

from refloop.edge.server import EdgeApp, EdgeServer, new_loop

#: the master kills a worker that has not said it is alive for its `timeout`
HEARTBEAT_SECONDS = 1.0


class EdgeWorker(Worker):
    def run(self) -> None:
        app = self.wsgi
        if not isinstance(app, EdgeApp):
            raise SystemExit("the edge worker serves a refloop.edge.server.EdgeApp")
        sys.setswitchinterval(0.001)  # the writer thread gets the GIL back promptly
        loop = new_loop()
        asyncio.set_event_loop(loop)
        bound = self.sockets[0].getsockname()
        server = EdgeServer(app, loop, (str(bound[0]), int(bound[1])))
        try:
            loop.run_until_complete(self._serve(server))
        finally:
            loop.close()

    async def _serve(self, server: EdgeServer) -> None:
        await server.start([s.sock for s in self.sockets], backlog=self.cfg.backlog)
        while self.alive:
            self.notify()
            if self.ppid != os.getppid():  # the master is gone
                break
            await asyncio.sleep(HEARTBEAT_SECONDS)
        await server.stop(grace=float(self.cfg.graceful_timeout))
