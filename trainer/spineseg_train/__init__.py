"""SpineSeg trainer: datasets, training, evaluation; imports the core, never the reverse."""
