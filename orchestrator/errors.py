"""Errors the user can fix.  The CLI prints their message as one line and exits 2."""


class UserError(Exception):
    """Bad input: the message is one sentence naming the file, the key and the fix."""

    exit_code = 2


class ConfigError(UserError):
    """A campaign YAML that cannot be used."""


class DatabaseError(UserError):
    """A database that cannot be used for this request."""


class CampaignFailed(Exception):
    """A model kept failing after its retries; the database is consistent and resumable."""

    exit_code = 3


class Terminated(BaseException):
    """SIGTERM: the driver stopped cleanly (database committed) and the CLI exits 143."""
