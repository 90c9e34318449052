"""Audio: file decoding, spectrogram front ends, loudness envelopes."""
