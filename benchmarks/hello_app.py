"""The FastAPI hello app every contender starts."""

from fastapi import FastAPI

app = FastAPI()


@app.get("/")
def root() -> dict:
    return {"hello": "world"}
