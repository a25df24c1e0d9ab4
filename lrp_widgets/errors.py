"""The one exception family users see: each carries a one-line, actionable message."""


class LRPWidgetsError(ValueError):
    """Base of every error lrp-widgets reports to a user (CLI: one line, exit 2; app: a message)."""


class ImageError(LRPWidgetsError):
    """The image cannot be read or used."""


class WeightsError(LRPWidgetsError):
    """The weights cannot be found, downloaded or loaded into the model."""


class ModelError(LRPWidgetsError):
    """The model is unknown or contains a layer LRP here does not support."""


class TargetError(LRPWidgetsError):
    """The class, layer or neuron asked for does not exist."""
