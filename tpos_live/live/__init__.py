"""The live engine: sound in, audio-reactive frames out (docs/design.md, "Real-time design")."""
