"""Error types. The CLI maps them to exit codes: UsageError / ValueError -> 2, MobilenetEdgeError -> 1."""


class MobilenetEdgeError(Exception):
    """A runtime failure the user can act on (bad file, failed check). CLI exit code 1."""


class UsageError(MobilenetEdgeError, ValueError):
    """A bad argument or input named by the user. CLI exit code 2."""


class ParityError(MobilenetEdgeError):
    """An exported model disagrees with its source beyond the stated tolerance. Exit code 1."""


class WeightsError(MobilenetEdgeError):
    """A weights file that cannot be loaded into the requested model. Exit code 1."""
