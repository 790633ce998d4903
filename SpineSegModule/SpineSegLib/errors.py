"""The errors SpineSeg raises on purpose; hosts show their message to the user as is."""


class SpineSegError(Exception):
    """Base class: a problem the user can understand and act on."""


class InputError(SpineSegError):
    """The input image cannot be used (missing, unreadable, not a CT, wrong shape...)."""


class CheckpointError(SpineSegError):
    """A model checkpoint is missing, corrupt, or does not match what SpineSeg expects."""


class Cancelled(SpineSegError):
    """The user cancelled a running job; nothing was written."""
