import asyncio
import time

import httpx


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
