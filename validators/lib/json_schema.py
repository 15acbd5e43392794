"""The JSON Schema subset that json_prefix checks while a document streams.

`SchemaSpec` is what a job spec writes (validated: unknown keywords are refused, not silently
ignored, since ignoring `minimum` or `pattern` would pass what the user meant to reject);
`SchemaNode` is its compiled form, what the prefix parser consults: allowed types, properties,
required keys, additionalProperties (false, true, or a schema), items, enum of scalars.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    model_validator,
)

Scalar = str | int | float | bool | None

JsonType = Literal["object", "array", "string", "number", "integer", "boolean", "null"]
_SUPPORTED = {"type", "properties", "required", "additionalProperties", "items", "enum",
              "title", "description", "$schema", "$id", "$comment", "default", "examples"}


class SchemaSpec(BaseModel):
    """The JSON Schema subset json_prefix checks while streaming; annotations are ignored."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    type: JsonType | list[JsonType] | None = None
    properties: dict[str, SchemaSpec] = Field(default_factory=dict)
    required: list[str] = Field(default_factory=list)
    additional_properties: bool | SchemaSpec = Field(True, alias="additionalProperties")
    items: SchemaSpec | None = None
    enum: list[StrictBool | StrictInt | StrictFloat | StrictStr | None] | None = None

    @model_validator(mode="before")
    @classmethod
    def _known_keywords(cls, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - _SUPPORTED - {"additional_properties"})
            if unknown:
                raise ValueError(f"unsupported JSON Schema keyword(s) {unknown}; supported: "
                                 f"{sorted(_SUPPORTED)}")
        return data

    @model_validator(mode="after")
    def _satisfiable(self) -> SchemaSpec:
        if isinstance(self.type, list) and not self.type:
            raise ValueError("type: give at least one type")
        if self.additional_properties is False:
            missing = sorted(set(self.required) - set(self.properties))
            if missing:
                raise ValueError(f"required key(s) {missing} are not in properties, and "
                                 "additionalProperties is false: no object can match")
        if self.enum is not None and not self.enum:
            raise ValueError("enum: give at least one value")
        return self

    def to_node(self) -> SchemaNode:
        types = None if self.type is None else frozenset(
            [self.type] if isinstance(self.type, str) else self.type)
        extra = self.additional_properties
        return SchemaNode(
            types=types, properties={k: v.to_node() for k, v in self.properties.items()},
            required=frozenset(self.required),
            additional=extra.to_node() if isinstance(extra, SchemaSpec) else extra,
            items=self.items.to_node() if self.items is not None else None,
            enum=tuple(self.enum) if self.enum is not None else None)


@dataclass(slots=True)
class SchemaNode:
    """A compiled schema (the subset json_prefix accepts); None anywhere means "any value"."""

    types: frozenset[str] | None = None  # JSON Schema type names; "integer" is a number
    properties: dict[str, SchemaNode | None] = field(default_factory=dict)
    required: frozenset[str] = frozenset()
    additional: bool | SchemaNode = True
    items: SchemaNode | None = None
    enum: tuple[Scalar, ...] | None = None
    # Derived in __post_init__.
    tracks_keys: bool = field(init=False, default=False)
    key_limit: int = field(init=False, default=1)
    enum_strings: frozenset[str] = field(init=False, default=frozenset())
    enum_limit: int = field(init=False, default=1)

    def __post_init__(self) -> None:
        self.tracks_keys = bool(self.properties or self.required or self.additional is not True)
        self.key_limit = max((len(k) for k in (*self.properties, *self.required)), default=0) + 1
        strings = [e for e in self.enum or () if isinstance(e, str)]
        self.enum_strings = frozenset(strings)
        self.enum_limit = max((len(s) for s in strings), default=0) + 1

    def allows(self, kind: str, literal: Scalar = None) -> bool:
        if self.types is not None and kind not in self.types and not (
                kind == "number" and "integer" in self.types):
            return False
        if self.enum is None:
            return True
        if kind in ("boolean", "null"):  # strict: true is not 1
            return any(e is literal for e in self.enum)
        if kind == "number":
            return any(isinstance(e, int | float) and not isinstance(e, bool) for e in self.enum)
        return kind == "string" and bool(self.enum_strings)
