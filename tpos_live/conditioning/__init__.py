"""Audio conditioning: audio in, time-stamped conditions in the text-embedding space out."""
