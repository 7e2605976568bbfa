"""Shieldwall: the one gate every AI-agent action passes."""

from .actions import (
    Action,
    CodeRun,
    Decision,
    Egress,
    Finding,
    ModelInput,
    ModelOutput,
    Severity,
    ToolCall,
    ToolResult,
    Verdict,
)
from .approvals import CallbackApprover, DenyAllApprover, QueueApprover, TerminalApprover
from .errors import Denied, PolicyError, ShieldwallError
from .session import Session, ToolError
from .wall import Shieldwall

__all__ = [
    "Action", "CallbackApprover", "CodeRun", "Decision", "Denied", "DenyAllApprover", "Egress",
    "Finding", "ModelInput", "ModelOutput", "PolicyError", "QueueApprover", "Session",
    "Severity", "Shieldwall", "ShieldwallError", "TerminalApprover", "ToolCall", "ToolError",
    "ToolResult", "Verdict",
]
__version__ = "0.1.0"
