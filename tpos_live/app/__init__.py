"""The Qt desktop app (issue 6)."""
