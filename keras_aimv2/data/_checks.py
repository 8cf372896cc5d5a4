"""Argument checks shared by the data modules."""


def check_positive_int(name, value):
    """Raise a `ValueError` naming `name` unless `value` is an int >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"`{name}` must be a positive int. Received: {name}={value!r}"
        )
