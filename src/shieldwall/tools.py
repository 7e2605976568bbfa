"""The tool registry: what each tool accepts, derived from its Python signature
(pydantic) or from a JSON Schema (MCP servers), and validated on every call."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, ValidationError, create_model


class ArgsValidator(Protocol):
    def validate(self, args: dict[str, Any]) -> tuple[dict[str, Any], list[str], str | None]:
        """Return (clean args, names stripped as undeclared, error message or None)."""
        ...

    def json_schema(self) -> dict[str, Any]: ...


class _IgnoreExtra(BaseModel):
    model_config = ConfigDict(extra="ignore", arbitrary_types_allowed=True)


class SignatureValidator:
    """Validates arguments against a function's type hints."""

    def __init__(self, fn: Callable[..., Any], name: str) -> None:
        sig = inspect.signature(fn)
        fields: dict[str, Any] = {}
        self.accepts_any = False
        for p in sig.parameters.values():
            if p.kind is inspect.Parameter.VAR_KEYWORD:
                self.accepts_any = True
                continue
            if p.kind is inspect.Parameter.VAR_POSITIONAL:
                continue
            ann = Any if p.annotation is inspect.Parameter.empty else p.annotation
            default = ... if p.default is inspect.Parameter.empty else p.default
            fields[p.name] = (ann, default)
        hints = {k: v for k, v in getattr(fn, "__annotations__", {}).items() if k != "return"}
        del hints
        self.model: type[BaseModel] = create_model(  # type: ignore[call-overload]
            f"{name}_args", __base__=_IgnoreExtra, **fields
        )
        self.names = frozenset(fields)

    def validate(self, args: dict[str, Any]) -> tuple[dict[str, Any], list[str], str | None]:
        stripped = [] if self.accepts_any else [k for k in args if k not in self.names]
        try:
            m = self.model.model_validate(args)
        except ValidationError as e:
            errs = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '(args)'}: {err['msg']}"
                for err in e.errors(include_url=False)
            )
            return args, stripped, errs
        clean = {k: getattr(m, k) for k in m.model_fields_set}
        if self.accepts_any:
            clean.update({k: v for k, v in args.items() if k not in self.names})
        return clean, stripped, None

    def json_schema(self) -> dict[str, Any]:
        return self.model.model_json_schema()


class JsonSchemaValidator:
    """Validates arguments against a JSON Schema (as MCP servers declare their tools)."""

    def __init__(self, schema: dict[str, Any]) -> None:
        import jsonschema

        self.schema = schema
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
        self._v = cls(schema)
        props = schema.get("properties")
        self.names = frozenset(props) if isinstance(props, dict) else frozenset()
        self.open = not isinstance(props, dict)

    def validate(self, args: dict[str, Any]) -> tuple[dict[str, Any], list[str], str | None]:
        stripped = [] if self.open else [k for k in args if k not in self.names]
        clean = dict(args) if self.open else {k: v for k, v in args.items() if k in self.names}
        errors = sorted(self._v.iter_errors(clean), key=lambda e: list(e.path))
        if errors:
            msg = "; ".join(
                f"{'.'.join(str(p) for p in e.path) or '(args)'}: {e.message}" for e in errors[:5]
            )
            return clean, stripped, msg
        return clean, stripped, None

    def json_schema(self) -> dict[str, Any]:
        return self.schema


@dataclass(slots=True)
class ToolSpec:
    name: str
    fn: Callable[..., Any] | None
    validator: ArgsValidator
    description: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


def spec_from_function(fn: Callable[..., Any], name: str | None = None) -> ToolSpec:
    tool_name = name or fn.__name__
    return ToolSpec(
        name=tool_name,
        fn=fn,
        validator=SignatureValidator(fn, tool_name),
        description=inspect.getdoc(fn) or "",
    )
