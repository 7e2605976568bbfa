"""Resolve the policy's ``sandbox:`` section for one (role, tool): section, then the
role's grant, then the tool's grant, each overriding what it sets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .types import Limits, NetworkMode

if TYPE_CHECKING:
    from ..policy.sections.sandbox import SandboxGrant, SandboxSection


@dataclass(frozen=True, slots=True)
class Settings:
    backend: str
    allow_weak: bool
    limits: Limits
    env: dict[str, str] = field(default_factory=dict)
    ro_paths: tuple[str, ...] = ()
    rw_paths: tuple[str, ...] = ()
    network: NetworkMode = "none"
    proxy_socket: str | None = None
    languages: frozenset[str] = frozenset({"python", "sh"})
    workspaces: bool = False
    max_code_bytes: int = 1 << 20
    workspaces_dir: str | None = None
    cgroup_root: str | None = None
    premake: bool = True


def resolve(section: SandboxSection, role: str | None, tool: str) -> Settings:
    levels: list[SandboxGrant] = [section]
    if role and role in section.roles:
        levels.append(section.roles[role])
    if tool in section.tools:
        levels.append(section.tools[tool])
    limits: dict[str, Any] = {}
    env: dict[str, str] = {}
    ro: list[str] = []
    rw: list[str] = []
    network: NetworkMode = "none"
    languages: frozenset[str] = frozenset({"python", "sh"})
    workspaces = False
    for g in levels:
        limits.update(g.limits.as_limits_kwargs())
        env.update(g.env)
        ro += [p for p in g.ro_paths if p not in ro]
        rw += [p for p in g.rw_paths if p not in rw]
        if g.network is not None:
            network = g.network
        if g.languages is not None:
            languages = frozenset(g.languages)
        if g.workspaces is not None:
            workspaces = g.workspaces
    return Settings(
        backend=section.backend, allow_weak=section.allow_weak, limits=Limits().merged(limits),
        env=env, ro_paths=tuple(ro), rw_paths=tuple(rw), network=network,
        proxy_socket=section.proxy_socket, languages=languages, workspaces=workspaces,
        max_code_bytes=section.max_code_bytes, workspaces_dir=section.workspaces_dir,
        cgroup_root=section.cgroup_root, premake=section.premake,
    )
