"""The HTTP floor's server: a bare FastAPI POST on uvicorn in one process, as Corral's
coordinator runs (``python -m corral.bench._floor_app PORT``)."""

from __future__ import annotations

import sys
from typing import Any

import uvicorn
from fastapi import FastAPI

app = FastAPI()


@app.post("/echo")
async def echo(body: dict[str, Any]) -> dict[str, Any]:
    return body


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
