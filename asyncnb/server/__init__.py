"""One gateway process, the composition root: it connects to Dask, opens the storage, builds
the engine over a Dask backend and serves the gateway's app with uvicorn (in the foreground,
or on a thread for a notebook)."""
