"""Policy sections owned by the layers they configure.

Each module here holds one section's pydantic model; the layer that reads it lives in its
own room (``flow/``, ``egress/`` ...). Keeping the models here lets ``policy/`` validate a
whole file without importing any layer.
"""
