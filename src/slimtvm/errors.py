"""The exception types slimtvm raises: the user's problems and slimtvm's own.

The CLI prints ``slimtvm: error: <message>`` for a :class:`SlimError` and exits with status 2.
An :class:`InternalError` — or any other exception — is a bug in slimtvm: the CLI prints
``slimtvm: internal error: <message>`` with the path of a file holding the full traceback, and
exits with status 1.
"""


class SlimError(Exception):
    """A problem with the user's input (model, target, inputs, artifact), stated in one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class InternalError(Exception):
    """slimtvm failed where it should not have (e.g. on a model plain TVM compiles); one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (TVM's can run to pages), or its type name."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
