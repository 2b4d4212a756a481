"""Any OpenAI-compatible chat endpoint (vLLM, llama.cpp server, Ollama, OpenAI) over httpx.

Settings come from arguments or the environment:
  RAGAPP_OPENAI_BASE_URL (or OPENAI_BASE_URL)  default http://127.0.0.1:8000/v1
  RAGAPP_OPENAI_KEY      (or OPENAI_API_KEY)   optional; local servers usually need none
  RAGAPP_OPENAI_MODEL                          the served model name when --model is not given
  RAGAPP_OPENAI_CONTEXT                        the model's context in tokens, default 8192
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence

from ragapp.errors import GeneratorError
from ragapp.generate.base import Generator, Messages, StopFilter, check_generation_args, declared_languages

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"


def _env(*names: str) -> str | None:
    return next((os.environ[n] for n in names if os.environ.get(n)), None)


class OpenAIGenerator(Generator):
    follows_instructions = True

    def __init__(
        self,
        model: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        context_tokens: int | None = None,
        timeout: float = 120.0,
        stream_responses: bool = True,
        languages: str | Sequence[str] | None = None,
    ):
        super().__init__()
        self.languages = declared_languages(languages)
        self.base_url = (base_url or _env("RAGAPP_OPENAI_BASE_URL", "OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self.model = model or _env("RAGAPP_OPENAI_MODEL")
        if not self.model:
            raise GeneratorError("--backend openai needs --model: the model name the endpoint serves (or set RAGAPP_OPENAI_MODEL)")
        self.name = f"{self.model} at {self.base_url}"
        self.api_key = api_key or _env("RAGAPP_OPENAI_KEY", "OPENAI_API_KEY")
        self.context_tokens = int(context_tokens or _env("RAGAPP_OPENAI_CONTEXT") or 8192)
        self.timeout = timeout
        self.stream_responses = stream_responses

    def _headers(self) -> dict[str, str]:
        h = {"Content-Type": "application/json"}
        if self.api_key:
            h["Authorization"] = f"Bearer {self.api_key}"
        return h

    def _payload(self, messages: Messages, max_new_tokens: int, temperature: float, stop: Sequence[str], stream: bool) -> dict:
        body = {"model": self.model, "messages": list(messages), "max_tokens": max_new_tokens,
                "temperature": temperature, "stream": stream}
        if stop:
            body["stop"] = list(stop)[:4]  # the OpenAI API takes at most 4
        return body

    def _raise_for(self, response) -> None:
        if response.status_code < 400:
            return
        try:
            response.read()
            detail = response.json().get("error", {})
            detail = detail.get("message", "") if isinstance(detail, dict) else str(detail)
        except Exception:  # noqa: BLE001 - the body is only used to improve the message
            detail = response.text[:300] if response.is_closed else ""
        url = f"{self.base_url}/chat/completions"
        if response.status_code in (401, 403):
            raise GeneratorError(f"{url} refused the API key ({response.status_code}): {detail or 'unauthorized'}; "
                                 "set RAGAPP_OPENAI_KEY or OPENAI_API_KEY to a valid key")
        low = detail.lower()
        if response.status_code == 404 or ("model" in low and ("not found" in low or "does not exist" in low)):
            raise GeneratorError(f"{url} does not serve model {self.model!r} ({response.status_code}): {detail}; "
                                 f"pass --model with a served model ({self.base_url}/models lists them)")
        raise GeneratorError(f"{url} answered {response.status_code}: {detail or response.reason_phrase}")

    def stream(
        self, messages: Messages, *, max_new_tokens: int = 256, temperature: float = 0.0, stop: Sequence[str] = ()
    ) -> Iterator[str]:
        import httpx

        check_generation_args(max_new_tokens, temperature)
        url = f"{self.base_url}/chat/completions"
        body = self._payload(messages, max_new_tokens, temperature, stop, self.stream_responses)
        filt = StopFilter(stop)  # servers honour `stop`, but not all of them; cut here too
        try:
            with self.lock, httpx.Client(timeout=self.timeout) as client:
                if not self.stream_responses:
                    r = client.post(url, json=body, headers=self._headers())
                    self._raise_for(r)
                    text = _message_text(r.json(), url)
                    out = filt.feed(text) + filt.flush()
                    if out:
                        yield out
                    return
                with client.stream("POST", url, json=body, headers=self._headers()) as r:
                    self._raise_for(r)
                    for piece in _sse_pieces(r.iter_lines(), url):
                        out = filt.feed(piece)
                        if out:
                            yield out
                        if filt.stopped:
                            return
                tail = filt.flush()
                if tail:
                    yield tail
        except httpx.ConnectError as e:
            raise GeneratorError(f"cannot reach the OpenAI-compatible endpoint {self.base_url} ({e}); start the server "
                                 "or set RAGAPP_OPENAI_BASE_URL to its address, e.g. http://127.0.0.1:8000/v1") from e
        except httpx.TimeoutException as e:
            raise GeneratorError(f"{url} did not answer within {self.timeout:.0f} s") from e
        except httpx.HTTPError as e:
            raise GeneratorError(f"request to {url} failed: {e}") from e


def _message_text(data: dict, url: str) -> str:
    try:
        return data["choices"][0]["message"]["content"] or ""
    except (KeyError, IndexError, TypeError) as e:
        raise GeneratorError(f"{url} answered without choices[0].message.content: {str(data)[:200]}") from e


def _sse_pieces(lines, url: str) -> Iterator[str]:
    """Text deltas of a server-sent-event stream of chat.completion.chunk objects, until [DONE]."""
    for line in lines:
        if not line.startswith("data:"):
            continue  # blank separators, comments (": ping"), event:/id: fields
        data = line[5:].strip()
        if data == "[DONE]":
            return
        try:
            chunk = json.loads(data)
        except json.JSONDecodeError as e:
            raise GeneratorError(f"{url} sent a malformed stream event: {data[:200]}") from e
        if "error" in chunk:
            err = chunk["error"]
            raise GeneratorError(f"{url} reported an error mid-stream: {err.get('message', err) if isinstance(err, dict) else err}")
        for choice in chunk.get("choices") or []:
            piece = (choice.get("delta") or {}).get("content")
            if piece:
                yield piece
