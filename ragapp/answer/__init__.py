"""Stage 4, answer: a question and its passages become a checked Answer. chat is the pipeline
(condense, retrieve, gate, prompt, generate, check citations, fall back to quoting); prompt builds
the fenced, numbered messages; gate abstains on weak evidence; citations checks each [n];
extractive quotes the best sentences. May import retrieve, index, ingest, generate and the root."""
