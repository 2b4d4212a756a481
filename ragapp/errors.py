"""Every error a user can cause, in one place. Edges convert them: the CLI prints the message and
exits non-zero, the Gradio page raises gr.Error, the HTTP API answers 4xx with {"detail": message}.

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


class MissingDependency(RagError, ImportError):
    """An optional backend is not installed; the message says what to pip install."""


class TooManyAttempts(RagError):
    """Login back-off (ragapp.throttle): the HTTP API answers 429 with Retry-After."""

    def __init__(self, message: str, retry_after: int = 1):
        super().__init__(message)
        self.retry_after = retry_after
