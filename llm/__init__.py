"""llm: a small decoder-LM toolkit (tokenizer, model, training, LoRA, generation, Hugging Face interop).

Submodules import torch lazily where they are reachable from the CLI; import what you need, e.g.
`from llm.model import GPT`, `from llm.generate import generate`.
"""
