"""What the owner of an API hands a colleague: a key for that API, its endpoint, curl lines."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..contract.keys import curl_lines


@dataclass
class SharedKey:
    """A key made for one colleague and one API: what to hand them, shown once."""

    key: str
    id: str
    name: str
    api: str
    endpoint: str
    scopes: list[str]
    record: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def curl(self) -> list[str]:
        return curl_lines(self.endpoint)

    def instructions(self) -> str:
        """What to send the colleague (the key itself travels apart, through a safe channel)."""
        lines = [
            f"API key for {self.name} on {self.api} (id {self.id}; scopes "
            f"{', '.join(self.scopes)}), shown once:",
            f"  export ASYNCNB_KEY={self.key}",
            f"Endpoint: {self.endpoint}",
            *(f"  {line}" for line in self.curl),
            f"Revoke: asyncnb keys revoke {self.id}",
        ]
        return "\n".join(lines)

    def __repr__(self) -> str:
        # never the key itself: reprs end up in logs and tracebacks
        return f"<SharedKey {self.id} for {self.name} on {self.api}>"
