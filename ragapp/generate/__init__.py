"""Generators: chat messages in, a stream of text out. `base` is the interface, `registry` maps a
backend name to its class (one file per backend); recase restores the case of an uncased model's
output. May import the root modules and llm only: it knows nothing of documents."""
