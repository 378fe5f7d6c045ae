"""`make demo` (`python -m asyncnb.demo`): an embedded gateway serving the example predictor."""
