"""An explorer page and an HTTP image server for any trained network.

    pip install -e '.[serve]'
    python -m stylegan.serve --network=network-snapshot-000400.pt [--host=127.0.0.1] [--port=8000] [--device=cuda]

then open http://127.0.0.1:8000/ (the explorer) or ask `GET /generate?seeds=7&trunc=0.7` (a PNG with
generate.py's provenance chunks) and `GET /info` (the network). `params.py` parses the query,
`batching.py` queues and batches the work per device, `app.py` is the FastAPI app, `static/` the
page (plain HTML, CSS and JavaScript: no build step, nothing fetched from elsewhere), `load.py` the
load generator of tests/test_serve.py and bench/serve.py.
"""
