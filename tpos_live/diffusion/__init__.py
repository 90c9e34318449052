"""Diffusion: model loading, samplers, audio semantic guidance, the renderer."""
