"""An OpenAI-compatible HTTP server on this computer, so other tools can use the engine.

`python -m engine.serve MODEL_DIR` serves `GET /v1/models` and `POST /v1/chat/completions`
(Starlette on uvicorn). Nothing leaves the computer: images come inline as data: URLs, the server
binds to 127.0.0.1 unless told otherwise (then only with an API key), and it refuses requests for
other host names, so a web page cannot reach it through DNS rebinding.
"""
