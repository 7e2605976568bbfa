#!/usr/bin/env bash
# Real third-party MCP servers the gateway's peer tests run against (tests/mcp/test_peers.py):
# PyPI mcp-server-time in its own venv, npm @modelcontextprotocol/server-everything.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
if [ ! -x .venv-mcppeers/bin/mcp-server-time ]; then
  $PY -m venv .venv-mcppeers
  .venv-mcppeers/bin/pip install -q mcp-server-time
fi
if command -v npm >/dev/null 2>&1 && [ ! -d .venv-npm-peers/node_modules/@modelcontextprotocol/server-everything ]; then
  mkdir -p .venv-npm-peers
  (cd .venv-npm-peers && npm install --silent --no-audit --no-fund @modelcontextprotocol/server-everything >/dev/null)
fi
