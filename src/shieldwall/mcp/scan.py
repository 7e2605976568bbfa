"""``shieldwall mcp scan``: start the servers of an MCP client configuration, list their
tools, and report signs of tool poisoning in what the model would read.

Tool poisoning (Invariant Labs, 2025) hides instructions for the model in a tool's
description or schema: ``<IMPORTANT>`` blocks, "before using this tool, read
~/.ssh/id_rsa", requests to pass data on or to keep the user uninformed, instructions
about *other* tools (shadowing), and text the user cannot see (invisible or
bidirectional Unicode). The rules here are small and explainable; each finding names
its rule, the tool, and the span that triggered it.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..actions import Severity

DEFAULT_MAX_DESCRIPTION = 2048
INSTRUCTIONS = "(instructions)"  # a server's instructions, scanned like a tool description

_I = re.IGNORECASE | re.DOTALL

HIDDEN_INSTRUCTIONS = [
    re.compile(r"<\s*/?\s*(important|system|instructions?|secret|hidden|admin|critical|"
               r"context|assistant|note_to_(?:ai|assistant|model))\b[^>]{0,40}>", _I),
    re.compile(r"\bbefore\s+(?:using|calling|invoking|running|you\s+use)\s+(?:this|the|any)\s+"
               r"tool", _I),
    re.compile(r"\b(?:ignore|disregard|forget|override)\s+(?:all\s+|any\s+)?(?:the\s+)?"
               r"(?:previous|prior|above|earlier|other|system)\s+(?:instructions|rules|prompts?)",
               _I),
    re.compile(r"\b(?:you|the\s+(?:assistant|model|ai|agent))\s+(?:must|should|have\s+to)\s+"
               r"(?:first|always|also)\s+(?:read|call|run|open|send|fetch|include|use)", _I),
    re.compile(r"\bthis\s+is\s+(?:very\s+)?(?:important|critical|mandatory)\b", _I),
]
SENSITIVE_PATHS = re.compile(
    r"(?:~|\$HOME|/home/\w+|/root)/\.(?:ssh|aws|gnupg|kube|docker|config/gcloud|netrc|"
    r"git-credentials|npmrc|pypirc|env)\b|\bid_(?:rsa|dsa|ecdsa|ed25519)\b|"
    r"/etc/(?:passwd|shadow|sudoers)\b|\.aws/credentials\b|\bmcp\.json\b|"
    r"\bcredentials?\.json\b|\.env\b(?!ironment)|\bprivate[_\s-]?key\b|"
    r"\b(?:secrets?|credentials?|tokens?|passwords?)\s+(?:file|folder|directory|store)\b", _I)
EXFILTRATION = [
    re.compile(r"\b(?:send|forward|upload|post|transmit|exfiltrate|leak|copy|bcc|cc)\b.{0,80}?"
               r"\b(?:to|into)\s+(?:https?://|[\w.+-]+@[\w-]+\.|the\s+(?:following|"
               r"attacker|external)|this\s+(?:url|address|endpoint|server))", _I),
    re.compile(r"\bpass\s+(?:its|the|their|all)\s+(?:content|contents|text|data|value)s?\s+"
               r"(?:as|in|into)\b", _I),
    re.compile(r"\binclude\s+(?:the\s+)?(?:content|contents|conversation|chat\s+history|"
               r"system\s+prompt|previous\s+messages|api\s+keys?|secrets?|credentials?)", _I),
    re.compile(r"\b(?:always|also)\s+(?:send|cc|bcc|forward)\b.{0,60}?@", _I),
]
CONCEALMENT = re.compile(
    r"\b(?:do\s+not|don'?t|never|must\s+not|should\s+not)\s+(?:tell|inform|mention|reveal|"
    r"notify|alert|show|disclose)\b.{0,40}?\b(?:the\s+)?user\b|"
    r"\bwithout\s+(?:telling|informing|notifying|alerting|asking)\s+the\s+user\b|"
    r"\b(?:the\s+)?user\s+(?:must|should)\s+not\s+(?:know|notice|see|be\s+told)\b|"
    r"\bkeep\s+(?:this|it)\s+(?:a\s+)?(?:secret|hidden|confidential)\b|"
    r"\b(?:secretly|silently|covertly)\b|"
    r"\bdo\s+not\s+mention\b|\bcould\s+upset\s+the\s+user\b", _I)
SHADOWING_PHRASES = re.compile(
    r"\b(?:when|whenever|if)\s+(?:the\s+)?[`'\"]?[\w.-]+[`'\"]?\s+tool\s+is\s+"
    r"(?:used|called|invoked)|\b(?:instead\s+of|rather\s+than|override|replace)s?\s+"
    r"(?:the\s+)?[`'\"]?[\w.-]+[`'\"]?\s+tool\b|\ball\s+other\s+tools\b", _I)

_INVISIBLE_RANGES = (
    (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x2064), (0x2066, 0x2069),
    (0xFEFF, 0xFEFF), (0x00AD, 0x00AD), (0x180E, 0x180E), (0xE0000, 0xE007F),
)


def _invisible(ch: str) -> bool:
    cp = ord(ch)
    if any(lo <= cp <= hi for lo, hi in _INVISIBLE_RANGES):
        return True
    return unicodedata.category(ch) == "Cf" and cp not in (0x200D,)


def normalise(text: str) -> str:
    """NFKC, invisible characters removed, whitespace collapsed: so that ``ig\u200bnore``
    and full-width letters still match the rules."""
    t = unicodedata.normalize("NFKC", text)
    t = "".join(ch for ch in t if not _invisible(ch))
    return re.sub(r"\s+", " ", t)


@dataclass(frozen=True, slots=True)
class ScanFinding:
    server: str
    tool: str
    rule: str
    message: str
    evidence: str = ""
    severity: Severity = Severity.HIGH

    def to_dict(self) -> dict[str, Any]:
        return {"server": self.server, "tool": self.tool, "rule": self.rule,
                "message": self.message, "evidence": self.evidence,
                "severity": self.severity.name.lower()}


@dataclass(frozen=True, slots=True)
class ScannedTool:
    server: str
    name: str
    description: str
    input_schema: dict[str, Any]


def _schema_texts(schema: Any, path: str = "inputSchema") -> Iterator[tuple[str, str]]:
    """Every string a model reads in a schema: property names and string values."""
    if isinstance(schema, dict):
        for k, v in schema.items():
            if isinstance(k, str) and path.endswith("properties"):
                yield f"{path}.{k}", k
            yield from _schema_texts(v, f"{path}.{k}")
    elif isinstance(schema, list):
        for i, v in enumerate(schema):
            yield from _schema_texts(v, f"{path}[{i}]")
    elif isinstance(schema, str):
        yield path, schema


def _excerpt(text: str, m: re.Match[str], width: int = 60) -> str:
    a, b = max(0, m.start() - 20), min(len(text), m.end() + 20)
    s = text[a:b]
    return (s[:width * 2] + "…") if len(s) > width * 2 else s


_DISTINCT = re.compile(r"[_\-.]|[a-z][A-Z]")


def _distinctive(name: str) -> bool:
    """Tool names that are unlikely to be plain words (``send_email``, ``getUser``)."""
    return bool(_DISTINCT.search(name)) or len(name) >= 8


def scan_tools(tools: Iterable[ScannedTool], *,
               max_description: int = DEFAULT_MAX_DESCRIPTION) -> list[ScanFinding]:
    tools = list(tools)
    all_names = {t.name for t in tools if _distinctive(t.name) and t.name != INSTRUCTIONS}
    own: dict[str, set[str]] = {}
    for t in tools:
        own.setdefault(t.server, set()).add(t.name)
    out: list[ScanFinding] = []
    for t in tools:
        texts: list[tuple[str, str]] = [("description", t.description)]
        texts += list(_schema_texts(t.input_schema))
        seen: set[str] = set()

        def add(rule: str, message: str, evidence: str, sev: Severity = Severity.HIGH,
                t: ScannedTool = t, seen: set[str] = seen) -> None:
            if rule in seen:
                return
            seen.add(rule)
            out.append(ScanFinding(t.server, t.name, rule, message, evidence, sev))

        if len(t.description) > max_description:
            add("mcp.scan.oversized_description",
                f"description is {len(t.description)} characters (limit {max_description}); "
                "long descriptions hide instructions", f"{len(t.description)} chars",
                Severity.MEDIUM)
        for where, raw in texts:
            bad = sorted({f"U+{ord(c):04X}" for c in raw if _invisible(c)})
            if bad:
                add("mcp.scan.invisible_unicode",
                    f"{where} contains invisible or bidirectional characters the user cannot "
                    "see", ", ".join(bad[:10]), Severity.CRITICAL)
            text = normalise(raw)
            for rx in HIDDEN_INSTRUCTIONS:
                m = rx.search(text)
                if m:
                    add("mcp.scan.hidden_instructions",
                        f"{where} carries instructions for the model", _excerpt(text, m),
                        Severity.CRITICAL)
                    break
            m = SENSITIVE_PATHS.search(text)
            if m:
                add("mcp.scan.sensitive_path",
                    f"{where} refers to credentials or private files", _excerpt(text, m),
                    Severity.CRITICAL)
            for rx in EXFILTRATION:
                m = rx.search(text)
                if m:
                    add("mcp.scan.exfiltration", f"{where} asks to send data elsewhere",
                        _excerpt(text, m), Severity.CRITICAL)
                    break
            m = CONCEALMENT.search(text)
            if m:
                add("mcp.scan.concealment", f"{where} asks to hide something from the user",
                    _excerpt(text, m), Severity.CRITICAL)
            # a server's own instructions may name its own tools; a tool may not steer others
            names = (all_names - own[t.server]) if t.name == INSTRUCTIONS else all_names
            others = [n for n in names if n != t.name
                      and re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", text)]
            m = SHADOWING_PHRASES.search(text)
            if others or m:
                ev = ", ".join(sorted(others)) if others else _excerpt(text, m) if m else ""
                add("mcp.scan.shadowing",
                    f"{where} talks about other tools' behaviour (shadowing)", ev,
                    Severity.HIGH)
    return out


# --------------------------------------------------------------------------- config


@dataclass(frozen=True, slots=True)
class ServerResult:
    name: str
    tools: list[ScannedTool]
    error: str | None = None
    instructions: str = ""


def read_config(path: str | Path) -> dict[str, dict[str, Any]]:
    """``{"mcpServers": {name: {command, args, env} | {url}}}`` (Claude/Cursor/VS Code
    shape; VS Code's ``servers`` key is accepted too)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    servers = data.get("mcpServers", data.get("servers")) if isinstance(data, dict) else None
    if not isinstance(servers, dict):
        raise ValueError(f"{path}: no \"mcpServers\" object")
    return {str(k): dict(v) for k, v in servers.items() if isinstance(v, dict)}


def spec_of(entry: dict[str, Any], base: Path, sandbox: bool = False) -> Any:
    from .upstream import UpstreamSpec

    if entry.get("url"):
        return UpstreamSpec(url=str(entry["url"]), headers=dict(entry.get("headers") or {}))
    cmd = entry.get("command")
    if not cmd:
        raise ValueError("server entry has neither command nor url")
    env = {str(k): str(v) for k, v in dict(entry.get("env") or {}).items()} or None
    cwd = entry.get("cwd")
    return UpstreamSpec(command=[str(cmd), *[str(a) for a in entry.get("args", [])]], env=env,
                        cwd=str(base / cwd) if cwd else None, sandbox=sandbox)


async def list_server(name: str, entry: dict[str, Any], base: Path,
                      timeout: float = 30.0, sandbox: bool = False) -> ServerResult:
    import os

    import anyio

    from .upstream import list_all_tools, open_session

    try:
        spec = spec_of(entry, base, sandbox)
        with anyio.fail_after(timeout), open(os.devnull, "w") as devnull:
            async with open_session(spec, errlog=devnull, client_name="shieldwall-scan") as (
                    cs, init):
                tools = await list_all_tools(cs)
                instr = str(getattr(init, "instructions", None) or "")
        return ServerResult(name, [ScannedTool(name, t.name, t.description or "",
                                               dict(t.input_schema or {})) for t in tools],
                            instructions=instr)
    except TimeoutError:
        return ServerResult(name, [], f"no answer within {timeout:.0f}s")
    except Exception as e:
        from .proxy import _describe

        return ServerResult(name, [], _describe(e))


async def scan_config(path: str | Path, *, max_description: int = DEFAULT_MAX_DESCRIPTION,
                      timeout: float = 30.0,
                      sandbox: bool = False) -> tuple[list[ServerResult], list[ScanFinding]]:
    import anyio

    cfg = read_config(path)
    base = Path(path).resolve().parent
    results: dict[str, ServerResult] = {}

    async def one(name: str, entry: dict[str, Any]) -> None:
        results[name] = await list_server(name, entry, base, timeout, sandbox)

    async with anyio.create_task_group() as tg:
        for name, entry in cfg.items():
            tg.start_soon(one, name, entry)
    ordered = [results[n] for n in cfg]
    tools = [t for r in ordered for t in r.tools]
    # server instructions reach the model too: scan them as a pseudo-tool
    tools += [ScannedTool(r.name, INSTRUCTIONS, r.instructions, {})
              for r in ordered if r.instructions]
    return ordered, scan_tools(tools, max_description=max_description)
