"""Video: H.264 encoding with the audio muxed in."""
