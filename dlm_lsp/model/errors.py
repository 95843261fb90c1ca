"""The errors a model setting can end in; their messages are meant for the user."""

from __future__ import annotations


class ModelError(Exception):
    """A model that cannot be found or loaded; the message is meant for the user."""


class NotDownloaded(ModelError):
    """``model`` names a hub id that the local hub cache does not hold."""

    def __init__(self, repo_id: str):
        super().__init__(f"{repo_id!r} is not downloaded yet: run `dlm-lsp pull {repo_id}` "
                         "(editors offer to download it)")
        self.repo_id = repo_id
