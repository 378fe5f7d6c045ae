"""`python -m asyncnb.cli`: the `asyncnb` command."""

from . import main

main()
