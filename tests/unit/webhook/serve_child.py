"""`vgpu-dra webhook` without an API server, for tests that need a process of its
own (peak memory): the real flags and defaults (`webhook_settings`), the real server
and translation, with fixed card facts and templates ensured into nothing.

    python -m tests.unit.webhook.serve_child --host=127.0.0.1 --port=0 ...

prints the port once listening and serves until SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from dataclasses import replace
from typing import Any

from tests.unit.webhook.pods import FACTS
from vgpu_dra.__main__ import parser
from vgpu_dra.webhook.app import webhook_settings
from vgpu_dra.webhook.server import serve
from vgpu_dra.webhook.service import Admitter, StaticFacts
from vgpu_dra.webhook.translate import WebhookMode


class _Nowhere:
    def cached(self, template: Any) -> bool:
        return False

    def ensure(self, template: Any) -> None:
        pass


def main(argv: list[str]) -> None:
    s = webhook_settings(parser(only="webhook").parse_args(["webhook", *argv]))
    admitter = Admitter(
        replace(s.translate, mode=WebhookMode.DRA),
        StaticFacts(FACTS),
        _Nowhere(),
        exclude_namespaces=s.exclude_namespaces,
    )

    async def run() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await serve(admitter, s.server, stop, started=lambda port: print(port, flush=True))

    asyncio.run(run())


if __name__ == "__main__":
    main(sys.argv[1:])
