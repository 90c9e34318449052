"""The Qt desktop app: the live engine in a window (the only package that imports Qt)."""
