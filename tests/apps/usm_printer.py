"""An app that prints numbered lines on request: ``/print?start=S&n=N``
prints lines S..S+N-1 on stdout (``out NNNNNNN ...``) and on stderr
(``err NNNNNNN ...``), ``streams=out`` or ``err`` for one of them;
``/partial`` prints a line without its newline; ``/crash`` ends the
process at once (exit code 3)."""

import os
import sys

from fastapi import FastAPI

app = FastAPI()
PAD = "x" * 40


@app.get("/")
def root() -> dict:
    return {"pid": os.getpid()}


@app.get("/print")
def print_lines(start: int = 0, n: int = 100, streams: str = "both") -> dict:
    out, err = streams in ("both", "out"), streams in ("both", "err")
    for i in range(start, start + n):
        if out:
            print(f"out {i:07d} {PAD}")
        if err:
            print(f"err {i:07d} {PAD}", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    return {"pid": os.getpid(), "next": start + n}


@app.get("/partial")
def partial(text: str = "partial") -> dict:
    sys.stdout.write(text)
    sys.stdout.flush()
    return {"pid": os.getpid()}


@app.get("/crash")
def crash() -> dict:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(3)
