"""Generator backends; each imports its heavy library inside its constructor."""
