"""Retrieval-augmented chat over private documents.

Heavy packages (torch, faiss, transformers, gradio) are imported inside the functions that use
them, so that `import ragapp` and `ragapp --help` stay instant.
"""

__version__ = "0.1.0"
