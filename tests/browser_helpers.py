"""Headless Chromium for the page tests: finding it, and the smallest DevTools-protocol client."""

from __future__ import annotations

import asyncio
import json
import shutil
import time

import pytest


def find_chromium() -> str:
    """Debian's Chromium on PATH (scripts/system-packages.sh installs it); fails the test clearly without it."""
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail(
        "the browser tests need Debian's Chromium and none was found on PATH; install it with "
        "`apt-get install -y --no-install-recommends chromium` (bash scripts/system-packages.sh does)"
    )


class DevTools:
    """Numbered DevTools-protocol commands over one page WebSocket (the ``websockets`` client)."""

    def __init__(self, socket) -> None:
        self.socket = socket
        self.last_id = 0

    async def call(self, method: str, **params) -> dict:
        self.last_id += 1
        await self.socket.send(json.dumps({"id": self.last_id, "method": method, "params": params}))
        while True:
            reply = json.loads(await asyncio.wait_for(self.socket.recv(), 30))
            if reply.get("id") == self.last_id:
                if "error" in reply:
                    raise RuntimeError(f"DevTools {method} failed: {reply['error']}")
                return reply["result"]

    async def evaluate(self, expression: str):
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    async def until(self, expression: str, what: str, timeout: float = 30.0):
        """Evaluate ``expression`` until it is truthy; fails with the page's text after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while not (value := await self.evaluate(expression)):
            if time.monotonic() > deadline:
                text = await self.evaluate("document.body ? document.body.innerText : ''")
                pytest.fail(f"the page did not show {what} within {timeout} s; it shows:\n{text}")
            await asyncio.sleep(0.2)
        return value
