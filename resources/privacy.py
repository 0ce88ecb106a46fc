"""Where privacy requests come in and access exports go out, and the secret key of suppression digests."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field


class PrivacyResource(ConfigurableResource):
    """The request inbox (a folder of JSON requests, filed by `cdp privacy` or any intake form), the folder
    access exports are written to, and the secret key of the digests that keep deleted people out."""

    salt: str = Field(
        description="Secret key of the suppression digests (HMAC-SHA256), from CDP_PRIVACY_SALT: set once, never "
        "changed, never shown. The local launchers make a random one per data folder, in <data>/privacy.key."
    )
    inbox: str = Field(description="Folder of pending requests, from CDP_PRIVACY_INBOX.")
    exports: str = Field(description="Folder access exports are written to, from CDP_PRIVACY_EXPORTS.")

    @property
    def inbox_path(self) -> Path:
        return Path(self.inbox)

    @property
    def exports_path(self) -> Path:
        return Path(self.exports)
