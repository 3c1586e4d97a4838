"""A FastAPI hello app used by the tests."""

import os

from fastapi import FastAPI

app = FastAPI()


@app.get("/")
def root() -> dict:
    return {"hello": "world", "pid": os.getpid(), "marker": os.environ.get("USM_MARKER")}


@app.get("/cwd")
def cwd() -> dict:
    return {"cwd": os.getcwd()}
