"""The one exception type slimtvm raises for problems the user can fix.

The CLI prints ``slimtvm: error: <message>`` for a :class:`SlimError` and exits with status 2;
any other exception is a bug in slimtvm and keeps its traceback.
"""


class SlimError(Exception):
    """A problem with the user's input (model, target, inputs, artifact), stated in one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (TVM's can run to pages), or its type name."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
