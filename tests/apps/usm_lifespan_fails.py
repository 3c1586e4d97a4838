"""An app whose lifespan startup raises: uvicorn logs the RuntimeError's
traceback, then "Application startup failed. Exiting."."""

from contextlib import asynccontextmanager

from fastapi import FastAPI


@asynccontextmanager
async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
    raise RuntimeError("the database is unreachable at startup")
    yield


app = FastAPI(lifespan=lifespan)
