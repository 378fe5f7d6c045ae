"""What runs inside Dask workers: chunks of workloads, progress reports, notebook APIs.

It knows storage and the predictor contract, never the engine or the web layer.
"""
