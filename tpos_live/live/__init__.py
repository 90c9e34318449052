"""The live engine (issue 4)."""
