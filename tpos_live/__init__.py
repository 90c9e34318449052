"""tpos-live: audio-reactive Stable Diffusion after The Power of Sound (TPoS, ICCV 2023)."""

__version__ = "0.1.0"
