"""Benchmark harness comparing asyncnb with a no-op ceiling and a FastAPI + Celery stack."""
