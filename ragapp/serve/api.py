"""The HTTP API, in the same server as the page (FastAPI; Gradio is mounted at "/").

    POST   /v1/search                        passages with scores
    GET    /v1/collections                   the collections you can see
    GET    /v1/documents/{collection}        the files of a collection
    POST   /v1/documents                     multipart upload (fields: collection, files), indexed
    DELETE /v1/documents/{collection}/{path} remove a file
    GET    /v1/jobs/{id}                     a job: indexing (POST /v1/documents?wait=false) or evaluation
    POST   /v1/eval                          evaluate a collection in the background (a job; ragapp.eval)
    GET    /v1/jobs/{id}/files/{name}        a file an evaluation wrote (report.md, charts, questions.jsonl)
    POST   /v1/chat/completions              OpenAI-compatible chat, streaming (SSE) or not
    GET    /v1/models                        OpenAI-compatible model list: "ragapp" and each collection
    GET    /openapi.json, /docs              the OpenAPI spec and its browser

Chat completions: `model` names the collection(s) ("notes", "notes,papers"), or is "ragapp" for the
server's --index collections; the extra field `collections` (a list) overrides it. The answer's
verified citations are in `citations` (on the message, and top-level; in a stream, on the last
chunk), with the rest of the checked answer under `ragapp`.

Errors are converted here: a RagError is answered 4xx with {"detail": message} (404 unknown
collection, 403 not yours, 409 busy, 413 too large, 401 login needed, 400 anything else).
With login (--auth), clients send HTTP Basic credentials, or `Authorization: Bearer USER:PASSWORD`
(what OpenAI client libraries send as their api_key).

`build_app` mounts the Gradio page on the API; `run_server` serves it (ragapp serve);
`BackgroundServer` serves it from a thread on a free port (tests, benchmarks, notebooks).
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from typing import Any

from fastapi import Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from ragapp import __version__
from ragapp.errors import RagError, Unauthorized
from ragapp.serve.http_status import headers_of, status_of
from ragapp.serve.same_origin import SameOriginGuard, allowed_hosts
from ragapp.serve.service import RagService
from ragapp.serve.throttle import GradioLoginGuard
from ragapp.serve.ui import CSS, HEAD, build_demo, gradio_upload_folder
from ragapp.serve.upload_guard import UploadGuard
from ragapp.types import Answer, Citation, Passage

# ----------------------------------------------------------------------------- JSON shapes


def passage_dict(p: Passage, rename=lambda n: n) -> dict:
    return {"text": p.text, "source": p.source, "page": p.page, "score": round(float(p.score), 6),
            "chunk_id": p.chunk_id, "collection": rename(p.collection), "start": p.start, "end": p.end,
            "sources": list(p.sources or [p.source])}


def citation_dict(c: Citation, rename=lambda n: n) -> dict:
    p = c.passage
    return {"number": c.number, "source": p.source, "page": p.page, "collection": rename(p.collection),
            "chunk_id": p.chunk_id, "score": round(float(p.score), 6), "supported": c.supported,
            "support": round(float(c.support), 4), "highlight": list(c.highlight) if c.highlight else None,
            "text": p.text}


def answer_extras(a: Answer, rename=lambda n: n) -> dict:
    return {"text": a.text, "mode": a.mode, "abstained": a.abstained, "reason": a.reason,
            "unsupported_sentences": list(a.unsupported_sentences), "question": a.question,
            "passages": [passage_dict(p, rename) for p in a.passages]}


# ----------------------------------------------------------------------------- request bodies


class SearchRequest(BaseModel):
    query: str = Field(description="what to look for, in plain words")
    collections: list[str] | None = Field(None, description="collections to search (default: the server's --index)")
    k: int = Field(5, ge=1, le=100, description="passages to return")
    mode: str = Field("hybrid", description="hybrid (dense + BM25), dense or bm25")
    mmr: bool = Field(False, description="diversify the results (maximal marginal relevance)")
    filters: dict | None = Field(None, description='e.g. {"source": "*.pdf", "page": [1, 10]}')


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # OpenAI clients send fields we do not use (n, top_p, user...)
    model: str = Field("ragapp", description='collection name(s), comma-separated, or "ragapp" for the server default')
    messages: list[Message]
    stream: bool = False
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    max_tokens: int | None = Field(None, ge=1, le=4096)
    max_completion_tokens: int | None = Field(None, ge=1, le=4096)
    collections: list[str] | None = Field(None, description="ragapp extension: collections to answer from (overrides model)")
    k: int | None = Field(None, ge=1, le=50, description="ragapp extension: passages retrieved")
    gate: bool = Field(True, description="ragapp extension: abstain without generating when the evidence is weak")
    gate_threshold: float | None = Field(None, ge=0.0, le=1.0,
                                         description="ragapp extension: the gate's evidence threshold (default: calibrated)")
    extractive: bool = Field(False, description="ragapp extension: quote the best passage sentences, no generator")


class EvalRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    collection: str = Field(description="the collection to evaluate")
    questions: list[dict[str, Any]] | None = Field(
        None, description='a question set: [{"question", "answers": [...], "answerable", "source"?}, ...] '
                          "(the JSONL rows of `ragapp eval`); leave out to make one from the collection")
    make: int = Field(20, ge=1, le=500, description="questions to make from the collection when none are given")
    unanswerable: float = Field(0.3, ge=0.0, le=1.0, description="share of made questions whose source is held out")
    k: list[int] | None = Field(None, description="passages retrieved; several compare (default: the server's k)")
    backend: str | None = Field(None, description="generator compared with the extractive answer (default: the server's)")
    model: str | None = Field(None, description="its model")
    gate_threshold: float | None = Field(None, ge=0.0, le=1.0, description="the 'gate on' rows' threshold (default: calibrated)")
    limit: int | None = Field(None, ge=1, description="ask this many of the questions, drawn at random (seed)")
    seed: int = 0


def _text(content) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return " ".join(part.get("text", "") for part in content if isinstance(part, dict) and part.get("type", "text") == "text")


def conversation(messages: list[Message]) -> tuple[str, list[tuple[str, str]]]:
    """(last user question, earlier (user, assistant) pairs). System messages are not used: the
    server's own grounding prompt is the only instruction the model gets."""
    turns = [(m.role, _text(m.content)) for m in messages if m.role in ("user", "assistant")]
    if not turns or turns[-1][0] != "user":
        raise RagError("the last message must be the user's question (role \"user\")")
    history, pending = [], None
    for role, text in turns[:-1]:
        if role == "user":
            pending = text
        elif pending is not None:
            history.append((pending, text))
            pending = None
    return turns[-1][1], history


# ----------------------------------------------------------------------------- the app


def create_app(service: RagService) -> FastAPI:
    app = FastAPI(title="ragapp", version=_version(), description=__doc__.split("\n\n")[0],
                  docs_url="/docs", openapi_url="/openapi.json", redoc_url=None)
    app.state.service = service

    @app.exception_handler(RagError)
    async def rag_error(request: Request, err: RagError):
        return JSONResponse({"detail": str(err)}, status_code=status_of(err), headers=headers_of(err))

    def user(request: Request) -> str | None:
        if not service.auth:
            return None
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        try:
            if scheme.lower() == "basic":
                value = base64.b64decode(value, validate=True).decode("utf-8")
            elif scheme.lower() != "bearer":
                raise ValueError
            name, _, password = value.partition(":")
        except ValueError:
            raise Unauthorized("log in: send HTTP Basic credentials (curl -u USER:PASSWORD) "
                               "or Authorization: Bearer USER:PASSWORD") from None
        address = request.client.host if request.client else None
        service.throttle.check(name, address)
        if not service.users.check(name, password):
            service.throttle.failed(name, address)
            raise Unauthorized("wrong user name or password")
        service.throttle.succeeded(name, address)
        return name

    @app.get("/v1/collections", tags=["documents"])
    def collections(who: str | None = Depends(user)) -> dict:
        """The collections you can see, with their size."""
        return {"collections": [service.info(who, name) for name in service.collections(who)]}

    @app.post("/v1/search", tags=["search"])
    def search(body: SearchRequest, who: str | None = Depends(user)) -> dict:
        """The k passages that best match the query, best first, with their scores."""
        passages = service.search(who, body.query, body.collections, k=body.k, mode=body.mode, mmr=body.mmr,
                                  filters=body.filters)
        rename = lambda n: service.display_name(who, n)  # noqa: E731
        return {"query": body.query, "passages": [passage_dict(p, rename) for p in passages]}

    @app.get("/v1/documents/{collection}", tags=["documents"])
    def list_documents(collection: str, who: str | None = Depends(user)) -> dict:
        """The files of a collection: source path, size, chunks."""
        return {"collection": collection, "files": service.files(who, collection)}

    @app.post("/v1/documents", tags=["documents"])
    def upload_documents(collection: str = Form(..., description="collection to add to (created if new)"),
                         files: list[UploadFile] = File(..., description="documents: .pdf .txt .md .html .docx"),
                         wait: bool = Query(True, description="answer when indexed (false: at once, with a job id)"),
                         embedder: str | None = Form(None, description="embedder of a new collection: "
                                                     "all-MiniLM-L6-v2, all-MiniLM-L6-v2-int8 or multilingual-e5-small "
                                                     "(default: the server's --embedder); an existing one keeps its own"),
                         who: str | None = Depends(user)) -> JSONResponse:
        """Upload documents into a collection and index them (added or replaced; nothing else changes)."""
        job = service.upload(who, collection, [(f.filename or "", f.file) for f in files], embedder=embedder)
        if wait:
            service.wait(job)
            if job.status == "failed":
                raise RagError(job.message)
        return JSONResponse(job.to_dict(), status_code=200 if wait else 202)

    @app.delete("/v1/documents/{collection}/{path:path}", tags=["documents"])
    def delete_document(collection: str, path: str, who: str | None = Depends(user)) -> dict:
        """Remove one file (its source path, as GET /v1/documents/{collection} lists it) from a collection."""
        removed = service.remove_file(who, collection, path)
        return {"collection": collection, "removed": path, "chunks_removed": removed}

    @app.get("/v1/jobs/{job_id}", tags=["documents"])
    def job(job_id: str, who: str | None = Depends(user)) -> dict:
        """A job: indexing (status, files done, its report) or evaluation (done/total answers, report, files)."""
        return service.job(who, job_id).to_dict()

    @app.post("/v1/eval", tags=["evaluation"], status_code=202)
    def evaluate(body: EvalRequest, who: str | None = Depends(user)) -> dict:
        """Evaluate a collection in the background: hallucination rate, accuracy, abstention, citations, retrieval,
        each with a 95% interval. Poll GET /v1/jobs/{id}; its files come from GET /v1/jobs/{id}/files/{name}."""
        if body.k is not None and (not body.k or min(body.k) < 1 or max(body.k) > 50):
            raise RagError(f"k takes passage counts between 1 and 50, got {body.k}")
        job = service.evaluate(who, body.collection, questions=body.questions, make=body.make,
                               unanswerable=body.unanswerable, ks=body.k, backend=body.backend, model=body.model,
                               gate_threshold=body.gate_threshold, limit=body.limit, seed=body.seed)
        return job.to_dict()

    @app.get("/v1/jobs/{job_id}/files/{name}", tags=["evaluation"])
    def job_file(job_id: str, name: str, who: str | None = Depends(user)):
        """A file an evaluation wrote: report.json, report.md, questions.jsonl, question-set.jsonl, the PNG charts."""
        from fastapi.responses import FileResponse

        return FileResponse(service.eval_file(who, job_id, name), filename=name)

    @app.get("/v1/models", tags=["chat"])
    def models(who: str | None = Depends(user)) -> dict:
        """OpenAI-compatible model list: "ragapp" (the server's default collections) and each collection."""
        names = ["ragapp", *service.collections(who)]
        return {"object": "list", "data": [{"id": n, "object": "model", "created": 0, "owned_by": "ragapp"} for n in names]}

    @app.post("/v1/chat/completions", tags=["chat"])
    def chat_completions(body: ChatCompletionRequest, who: str | None = Depends(user)):
        """OpenAI-compatible chat over your documents; the answer carries its verified citations."""
        question, history = conversation(body.messages)
        names = body.collections
        if not names and body.model and body.model != "ragapp":
            names = [n.strip() for n in body.model.split(",") if n.strip()]
        stream = service.chat_stream(
            who, question, history, names, k=body.k, backend="extractive" if body.extractive else None,
            temperature=body.temperature or 0.0, gate=body.gate, gate_threshold=body.gate_threshold,
            max_new_tokens=body.max_completion_tokens or body.max_tokens or 256)
        first = next(stream)  # retrieval and the gate run here, so their errors are a proper 4xx
        rename = lambda n: service.display_name(who, n)  # noqa: E731
        meta = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()), "model": body.model}
        if not body.stream:
            final = first
            for item in stream:
                final = item
            return _completion(meta, final, rename)
        return StreamingResponse(_sse(meta, first, stream, rename), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    return app


def _completion(meta: dict, answer: Answer, rename) -> dict:
    cites = [citation_dict(c, rename) for c in answer.citations]
    return {**meta, "object": "chat.completion",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": answer.text, "citations": cites}}],
            "citations": cites, "ragapp": answer_extras(answer, rename)}


def _chunk(meta: dict, delta: dict, finish: str | None = None, **extra) -> str:
    body = {**meta, "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


def _sse(meta: dict, first, stream, rename):
    """Content deltas while the model writes; the last chunk carries the citations. When the checked
    answer differs from what was streamed (abstention, quoted fallback), it follows as a last delta."""
    sent = ""
    yield _chunk(meta, {"role": "assistant", "content": ""})
    try:
        for item in _chain(first, stream):
            if isinstance(item, str):
                if item.startswith(sent) and len(item) > len(sent):
                    yield _chunk(meta, {"content": item[len(sent):]})
                    sent = item
                continue
            final: Answer = item
            if final.text.strip() != sent.strip():
                if final.text.startswith(sent):
                    tail = final.text[len(sent):]
                else:
                    note = final.reason or "the checked answer"
                    tail = (f"\n\n[{note}]\n" if sent else "") + final.text
                yield _chunk(meta, {"content": tail})
            cites = [citation_dict(c, rename) for c in final.citations]
            yield _chunk(meta, {"citations": cites}, "stop", citations=cites, ragapp=answer_extras(final, rename))
    except RagError as err:
        yield f"data: {json.dumps({'error': {'message': str(err), 'type': type(err).__name__}})}\n\n"
    finally:
        stream.close()  # a client that hung up must not leave the model's lock held
    yield "data: [DONE]\n\n"


def _chain(first, rest):
    yield first
    yield from rest


def _version() -> str:
    return __version__


# ----------------------------------------------------------------------------- with the page


def build_app(service: RagService) -> FastAPI:
    """The API with the Gradio page mounted at "/" (behind the same login when --auth is on)."""
    import gradio as gr


    app = create_app(service)
    demo = build_demo(service)
    auth = service.users.check if service.auth else None
    app = gr.mount_gradio_app(app, demo, path="/", auth=auth, css=CSS, head=HEAD, footer_links=["api", "settings"],
                              max_file_size=service.config.limits.max_file_bytes, show_error=True,
                              ssr_mode=False, auth_message="ragapp: log in to chat with your documents")
    # Gradio checks that a file value names a file its upload route wrote only once `has_launched`
    # is set, which launch() does and mount_gradio_app does not. Set it here; the page's handlers
    # also check every file themselves (PageHandlers._uploaded), so neither check stands alone.
    demo.has_launched = True
    return guarded(app, service)


def guarded(app, service: RagService):
    """The app behind the request guards, outermost first: same-origin, login throttle, upload limits."""
    from starlette.middleware.cors import CORSMiddleware


    cfg = service.config
    app.add_middleware(UploadGuard, paths=UPLOAD_ROUTES, limits=cfg.limits, upload_folder=gradio_upload_folder)
    if service.auth:
        app.add_middleware(GradioLoginGuard, throttle=service.throttle)
    if cfg.allowed_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(cfg.allowed_origins), allow_credentials=True,
                           allow_methods=["*"], allow_headers=["*"])
    app.add_middleware(SameOriginGuard, hosts=allowed_hosts(cfg.host, cfg.allowed_hosts), origins=cfg.allowed_origins)
    return app


UPLOAD_ROUTES = ("/v1/documents", "/gradio_api/upload")


def run_server(service: RagService, grace: int = 3, deadline: float = 8.0) -> None:
    """Serve until SIGTERM or Ctrl-C, then stop within `deadline` seconds whatever is running.

    Left to itself, uvicorn waits for every open connection to end before it exits, with no time
    limit, and some never end on their own: an upload waiting for its indexing job (POST
    /v1/documents?wait=true), the heartbeat stream of each open page, a long chat. So on shutdown:
    indexing is stopped at once (RagService.close: the index is crash-safe, and the interrupted work
    is redone at the next start), which also answers the requests waiting for it; connections
    still open after `grace` seconds are cut; and if the process is still alive `deadline` seconds
    after the shutdown began (a thread that does not stop), it exits anyway."""
    import asyncio
    import logging
    import os
    import sys

    import uvicorn

    class Server(uvicorn.Server):
        async def shutdown(self, sockets=None) -> None:
            def hard_stop() -> None:
                time.sleep(deadline)
                print(f"ragapp: still busy {deadline:.0f} s after the shutdown began; exiting now (the indexes "
                      "are crash-safe: interrupted indexing is finished at the next start)", file=sys.stderr)
                os._exit(1)

            threading.Thread(target=hard_stop, name="ragapp-shutdown-deadline", daemon=True).start()
            # Each stream still open after the grace period (a page's heartbeat) would be logged as
            # an error with a traceback; here that is just the shutdown (as in BackgroundServer).
            logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)
            await asyncio.gather(asyncio.to_thread(service.close, grace), super().shutdown(sockets))

    app = build_app(service)
    host = service.config.host
    shown = f"[{host}]" if ":" in host else host
    print(f"ragapp: open http://{shown}:{service.config.port}/  (API: /v1/..., docs: /docs)", file=sys.stderr)
    server = Server(uvicorn.Config(app, host=host, port=service.config.port, log_level="warning",
                                   timeout_graceful_shutdown=grace))
    try:
        server.run()  # as uvicorn.run(app, ...) does
    except KeyboardInterrupt:
        pass
    finally:
        service.close(grace)
    if not server.started:
        sys.exit(3)  # uvicorn's STARTUP_FAILURE, as uvicorn.run exits


class BackgroundServer:
    """The app served by uvicorn in a thread on a free port (tests, benchmarks, notebooks):

        with BackgroundServer(service) as url:
            httpx.get(f"{url}/v1/collections")
    """

    def __init__(self, service: RagService, host: str = "127.0.0.1", port: int = 0, start_timeout: float = 60.0):
        self.service, self.host, self.port, self.start_timeout = service, host, port, start_timeout
        self.url = ""

    def __enter__(self) -> str:
        import uvicorn

        config = uvicorn.Config(build_app(self.service), host=self.host, port=self.port, log_level="warning",
                                timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="ragapp-uvicorn", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + self.start_timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start within {self.start_timeout:.0f} s")
            time.sleep(0.05)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://{self.host}:{port}"
        return self.url

    def __exit__(self, *exc) -> None:
        import logging

        # Open event streams (a browser's or gradio_client's) are cancelled after the grace period;
        # uvicorn logs each as an error with a traceback, which here is just the shutdown.
        log = logging.getLogger("uvicorn.error")
        level = log.level
        log.setLevel(logging.CRITICAL)
        try:
            self._server.should_exit = True
            self._thread.join(timeout=10)
        finally:
            log.setLevel(level)
        self.service.close()
