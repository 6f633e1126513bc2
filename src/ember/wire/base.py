"""Base classes of the wire models: camelCase on the wire, snake_case in Python."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import (
    BaseModel,
    ConfigDict,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)
from pydantic.alias_generators import to_camel


class ResponseModel(BaseModel):
    """Tolerant: unknown fields are ignored, so older clients read newer servers.

    On output, absent values are left out rather than sent as null (the
    official clients' schemas reject null for optional fields), except the
    wire names in `_nullable`, which the reference always sends.
    """

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", serialize_by_alias=True
    )
    _nullable: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _omit_nulls(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None or k in self._nullable}
        return data


class RequestModel(BaseModel):
    """Strict: an unknown field, or a value of the wrong JSON type ("80" for a
    port, true for a count), is a 400; the reference's private `__*`
    parameters are the exception and are ignored."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", strict=True
    )

    @model_validator(mode="before")
    @classmethod
    def _drop_private_parameters(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {
                k: v for k, v in data.items() if not (isinstance(k, str) and k.startswith("__"))
            }
        return data
