"""Projects and their bearer tokens."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession

from ember.store import Database, models
from ember.wire.errors import ForbiddenError, UnauthorizedError

from .ids import new_id, new_token

DEFAULT_PROJECT = "default"


@dataclass(frozen=True)
class Principal:
    """Who is calling: every name, list and snapshot is scoped to this project."""

    project_id: str
    project_name: str
    team_id: str

    def check_scope(self, *, team_id: str | None, project: str | None) -> None:
        """`teamId` / `projectId` query parameters must name the token's own scope."""
        if team_id and team_id != self.team_id:
            raise ForbiddenError(f"teamId {team_id!r} does not match this token's team")
        if project and project not in (self.project_id, self.project_name):
            raise ForbiddenError(f"project {project!r} does not match this token's project")


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def ensure_project(db: DbSession, name: str) -> models.Project:
    project = db.scalar(select(models.Project).where(models.Project.name == name))
    if project is None:
        project = models.Project(
            id=new_id("prj"), name=name, team_id=new_id("team"), created_at=int(time.time() * 1000)
        )
        db.add(project)
        db.flush()
    return project


def create_token(db: DbSession, project_name: str) -> tuple[str, models.Project]:
    """A new token for the project (created if missing); only its hash is stored."""
    project = ensure_project(db, project_name)
    token = new_token()
    db.add(
        models.Token(
            id=new_id("tok"),
            project_id=project.id,
            token_hash=_hash(token),
            created_at=int(time.time() * 1000),
        )
    )
    return token, project


def has_tokens(db: DbSession) -> bool:
    return db.scalar(select(models.Token.id).limit(1)) is not None


class TokenVerifier:
    """Bearer token → project. Tokens are never revoked yet, so a verified
    token is remembered for the life of the process; revocation, when it
    comes, must forget it here."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self._verified: dict[str, Principal] = {}

    async def verify(self, authorization: str | None) -> Principal:
        if not authorization or not authorization.lower().startswith("bearer "):
            raise UnauthorizedError("missing bearer token: send 'Authorization: Bearer <token>'")
        token_hash = _hash(authorization[7:].strip())
        cached = self._verified.get(token_hash)
        if cached is not None:
            return cached

        def lookup(db: DbSession) -> Principal | None:
            row = db.execute(
                select(models.Project)
                .join(models.Token, models.Token.project_id == models.Project.id)
                .where(models.Token.token_hash == token_hash)
            ).scalar_one_or_none()
            return Principal(row.id, row.name, row.team_id) if row else None

        principal = await self.database.run(lookup)
        if principal is None:
            raise UnauthorizedError("invalid token")
        if len(self._verified) < 10_000:
            self._verified[token_hash] = principal
        return principal
