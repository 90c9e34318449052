"""The mini world: a synthetic world of scenes and sound objects, small enough to train on a CPU."""
