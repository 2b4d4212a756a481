"""Stage 1, ingest: files become Documents (loaders), Documents become chunks counted in the
embedder's own tokens (chunking), chunks become vectors (embed). May import the root modules
(config, errors, types) only."""
