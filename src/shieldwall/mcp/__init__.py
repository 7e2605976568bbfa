"""The MCP gateway: the gate in front of any MCP server (stdio and Streamable HTTP),
tool-manifest pinning (rug-pull defence) and a tool-poisoning scan."""
