"""Rules every side of asyncnb shares: the gateway, the workers, the client, the notebook and the
Jupyter extension.

Nothing here does I/O, and nothing imports another part of asyncnb but `asyncnb.errors`, so any
side may import any module of it (the Jupyter extension imports nothing else of asyncnb).
"""
