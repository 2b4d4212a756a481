"""Every error a user can cause, in one place. Edges convert them, once each: the CLI prints the
message and exits non-zero, the Gradio page raises gr.Error, the HTTP server answers with the
status of ragapp.serve.http_status and {"detail": message}.

Messages name the bad value and say how to fix it.
"""


class RagError(Exception):
    """Base class: a problem the user can fix. The message is shown as is."""


class IndexNotFound(RagError):
    pass


class EmbedderMismatch(RagError):
    pass


class InvalidInput(RagError):
    pass


class LoaderError(RagError):
    """A file that cannot be read; indexing reports it in one line and goes on."""


class GeneratorError(RagError):
    pass


class Unauthorized(RagError):
    """Login needed, or wrong credentials (HTTP 401)."""


class Forbidden(RagError):
    """The collection is someone else's or shared read-only, or a request from another site (403)."""


class Busy(RagError):
    """The collection is being indexed (409)."""


class UploadTooLarge(RagError):
    """An upload over --max-upload-mb / --max-upload-files or the per-request total (413)."""


class Interrupted(RagError):
    """Indexing stopped by the server's shutdown between two commits: what was committed stays."""


class MissingDependency(RagError, ImportError):
    """An optional backend is not installed; the message says what to pip install."""


class TooManyAttempts(RagError):
    """Login back-off (ragapp.serve.throttle): the HTTP API answers 429 with Retry-After."""

    def __init__(self, message: str, retry_after: int = 1):
        super().__init__(message)
        self.retry_after = retry_after
