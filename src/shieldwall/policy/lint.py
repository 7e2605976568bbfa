"""``shieldwall policy lint``: dangerous combinations a valid policy can still hold."""

from __future__ import annotations

from dataclasses import dataclass

from .model import Policy


@dataclass(frozen=True)
class LintWarning:
    rule: str
    message: str


def lint(policy: Policy) -> list[LintWarning]:
    out: list[LintWarning] = []
    for rname, role in policy.roles.items():
        undeclared = [t for t in role.tools if t not in policy.tools]
        if undeclared:
            out.append(LintWarning("lint.tool_undeclared",
                                   f"role {rname!r} grants tools with no declaration (no argument "
                                   f"constraints, default labels): {', '.join(undeclared)}"))
        tools = [policy.tools[t] for t in role.tools if t in policy.tools]
        reads_untrusted = [n for n in role.tools if n in policy.tools and not policy.tools[n].result.trusted]
        reads_private = [n for n in role.tools if n in policy.tools
                         and policy.tools[n].result.sensitivity in ("confidential", "restricted")]
        sinks = [n for n in role.tools if n in policy.tools and policy.tools[n].sink]
        if reads_untrusted and reads_private and sinks:
            out.append(LintWarning("lint.lethal_trifecta",
                                   f"role {rname!r} can read untrusted content ({', '.join(reads_untrusted)}), "
                                   f"private data ({', '.join(reads_private)}) and send out "
                                   f"({', '.join(sinks)}): make sure flow rules cover it"))
        if role.db_scope == "admin" and role.budget is None:
            out.append(LintWarning("lint.admin_unbudgeted",
                                   f"role {rname!r} has admin database scope and no call budget"))
        if "DELETE" in role.http_methods and not any(t.approval_required for t in tools):
            out.append(LintWarning("lint.delete_without_approval",
                                   f"role {rname!r} may send HTTP DELETE but no tool of it needs approval"))
    for tname, tool in policy.tools.items():
        if tool.sink and not tool.args:
            out.append(LintWarning("lint.sink_unconstrained",
                                   f"sink tool {tname!r} has no argument constraints"))
    for task_name, task in policy.tasks.items():
        if task.allow is None and not task.deny:
            out.append(LintWarning("lint.task_narrows_nothing",
                                   f"task {task_name!r} has no allow or deny list: it does not narrow its role"))
    return out
