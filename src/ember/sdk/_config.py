"""Where the SDK finds its server and token: arguments, then EMBER_URL and
EMBER_TOKEN, then the file `ember serve` writes."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ._errors import EmberConfigError

DEFAULT_CONFIG_PATHS = (
    Path("/var/lib/ember/client.json"),
    Path.home() / ".config" / "ember" / "client.json",
)


@dataclass(frozen=True)
class Config:
    url: str
    token: str
    team_id: str | None = None
    project_id: str | None = None

    @classmethod
    def resolve(
        cls,
        url: str | None = None,
        token: str | None = None,
        *,
        config_path: str | os.PathLike[str] | None = None,
    ) -> Config:
        url = url or os.environ.get("EMBER_URL")
        token = token or os.environ.get("EMBER_TOKEN")
        team_id = os.environ.get("EMBER_TEAM_ID")
        project_id = os.environ.get("EMBER_PROJECT_ID")
        if url and token:
            return cls(url.rstrip("/"), token, team_id, project_id)
        candidates = [Path(config_path)] if config_path else []
        if os.environ.get("EMBER_CONFIG"):
            candidates.append(Path(os.environ["EMBER_CONFIG"]))
        candidates.extend(DEFAULT_CONFIG_PATHS)
        for path in candidates:
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if not isinstance(data, dict):
                raise EmberConfigError(f"{path}: expected a JSON object with url and token")
            needed = [key for key, given in (("url", url), ("token", token)) if not given]
            if absent := [key for key in needed if not isinstance(data.get(key), str)]:
                raise EmberConfigError(f"{path}: no {' or '.join(absent)} in the file")
            return cls(
                (url or data["url"]).rstrip("/"),
                token or data["token"],
                team_id or data.get("teamId"),
                project_id or data.get("projectId"),
            )
        raise EmberConfigError(
            "no Ember server configured: pass url= and token=, set EMBER_URL and EMBER_TOKEN, "
            "or run `ember serve`, which writes /var/lib/ember/client.json"
        )
