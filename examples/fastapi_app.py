"""A FastAPI app behind PostHogASGIMiddleware, served by uvicorn: a context per request.

    python -m posthog_logging serve &
    export POSTHOG_HOST=http://127.0.0.1:8990 POSTHOG_API_KEY=phc_local
    python examples/fastapi_app.py            # serves on 127.0.0.1:8000
    curl -H 'X-POSTHOG-DISTINCT-ID: user_8' http://127.0.0.1:8000/reports/7
    curl -H 'X-POSTHOG-DISTINCT-ID: user_8' http://127.0.0.1:8000/reports/7/export
    curl -H 'X-POSTHOG-DISTINCT-ID: user_8' http://127.0.0.1:8000/boom

Every event logged while serving a request (also while streaming its response, and in a
websocket session) carries the request's person, session and URL. An error escaping a
route is sent once with that context, then FastAPI answers 500.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator

from fastapi import FastAPI, WebSocket
from fastapi.responses import StreamingResponse

import posthog_logging as posthog
from posthog_logging.asgi import PostHogASGIMiddleware

log = logging.getLogger("example.fastapi")

app = FastAPI()
app.add_middleware(PostHogASGIMiddleware)


@app.get("/reports/{report_id}")
async def report(report_id: int) -> dict[str, int]:
    log.info("report_viewed", extra={"event": True, "report_id": report_id})
    return {"report": report_id}


@app.get("/reports/{report_id}/export")
async def export(report_id: int) -> StreamingResponse:
    async def rows() -> AsyncIterator[bytes]:
        for n in range(3):
            await asyncio.sleep(0)
            yield f"row {n}\n".encode()
        log.info("report_exported", extra={"event": True, "report_id": report_id, "rows": 3})

    return StreamingResponse(rows(), media_type="text/csv")


@app.websocket("/live")
async def live(websocket: WebSocket) -> None:
    await websocket.accept()
    text = await websocket.receive_text()
    log.info("live_message", extra={"event": True, "length": len(text)})
    await websocket.send_text(text.upper())
    await websocket.close()


@app.get("/boom")
async def boom() -> None:
    raise LookupError("no such report")


def main() -> None:
    import uvicorn

    logging.basicConfig(level=logging.INFO)
    logging.getLogger().addHandler(posthog.PostHogHandler())
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))


if __name__ == "__main__":
    main()
