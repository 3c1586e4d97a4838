"""An app in a directory whose name has a space and non-ASCII letters, with
a non-ASCII module and attribute name."""

from fastapi import FastAPI

äpp = FastAPI()


@äpp.get("/")
def root() -> dict:
    return {"hello": "ünicode"}
