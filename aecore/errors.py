"""One exception family, so the CLI and the app can turn any bad input into one clear line."""


class AecoreError(Exception):
    """Base of every error aecore raises on purpose; its message is meant for the user."""


class ConfigError(AecoreError, ValueError):
    """A model or training configuration is invalid (unknown name, bad field, absurd value)."""


class DataError(AecoreError):
    """A dataset is missing, corrupt or in an unexpected format."""


class ModelFileError(AecoreError):
    """A saved model (config, weights, manifest) cannot be trusted or read."""


class TrainingError(AecoreError):
    """Training cannot go on (e.g. the loss became NaN/Inf)."""
