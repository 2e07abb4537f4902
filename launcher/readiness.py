import asyncio
import time

import httpx

from launcher.options import LaunchOptions
from shared.logging import highlight
from shared.registry import SERVICES


async def wait_healthy(name: str, url: str, within_seconds: float = 60.0) -> None:
    deadline = time.monotonic() + within_seconds
    async with httpx.AsyncClient(timeout=2.0) as client:
        while True:
            try:
                if (await client.get(f"{url}/health")).status_code == 200:
                    print(f"  {name:<9} up at {url}", flush=True)
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{name} did not become healthy at {url} within {within_seconds}s"
                )
            await asyncio.sleep(0.2)


def print_ready_banner(options: LaunchOptions, title: str) -> None:
    """The lines a person looks for: where Lyceum answers, its docs, and each service."""
    ready = highlight(f"{title} is ready: {options.url(0)}")
    print(f"\n{ready}  (Ctrl-C stops it)", flush=True)
    print(f"  API docs  {highlight(options.url(0) + '/docs')}", flush=True)
    print("  Services (each with its own /docs):", flush=True)
    for entry in SERVICES:
        print(f"    {entry.name:<9} {options.url(entry.port_offset)}", flush=True)
