"""Reference HTTP targets speaking the same AsyncAPI contract as asyncnb."""
