"""The error raised for a checkpoint that cannot be converted."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be converted exactly into `AIMV2Backbone`.

    Raised before anything is built or written, with a message naming the
    file, key, shape or value at fault and what was expected.

    Example:

    >>> try:  # doctest: +SKIP
    ...     load_checkpoint("pytorch_model.bin")
    ... except CheckpointError as error:
    ...     print(error)
    """


def listed(problems, shown=20):
    """The first `shown` problems, each on an indented line, and the rest.

    Args:
        problems: list of str. One line per problem.
        shown: int. How many problems to show. Defaults to `20`.

    Returns:
        A str starting with a newline, to end an error message with.

    Example:

    >>> print(listed(["a", "b", "c"], shown=2))
    <BLANKLINE>
      a
      b
      ... and 1 more
    """
    more = len(problems) - shown
    return "".join(f"\n  {problem}" for problem in problems[:shown]) + (
        f"\n  ... and {more} more" if more > 0 else ""
    )
