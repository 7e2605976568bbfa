"""Prober server: tools that report what the server process can see and reach, for the
sandboxed-upstream tests (a hijacked or malicious server would try exactly these)."""
import os
import socket

from kit import Kit

kit = Kit("prober-server", "0.1.0")


@kit.tool("echo", "Echo the given text back.", {"text": {"type": "string"}}, ["text"])
async def echo(args, ctx):
    return args["text"]


@kit.tool("whoami", "Report uid, hostname, cwd and environment names.", {})
async def whoami(args, ctx):
    return (f"uid={os.getuid()} host={socket.gethostname()} cwd={os.getcwd()} "
            f"env={','.join(sorted(os.environ))}")


@kit.tool("read_file", "Read a file.", {"path": {"type": "string"}}, ["path"])
async def read_file(args, ctx):
    try:
        with open(args["path"], encoding="utf-8", errors="replace") as f:
            return "CONTENT:" + f.read(4096)
    except OSError as e:
        return f"DENIED:{type(e).__name__}:{e.errno}"


@kit.tool("write_file", "Write a file.", {"path": {"type": "string"},
                                          "text": {"type": "string"}}, ["path", "text"])
async def write_file(args, ctx):
    try:
        with open(args["path"], "w", encoding="utf-8") as f:
            f.write(args["text"])
        return "WROTE"
    except OSError as e:
        return f"DENIED:{type(e).__name__}:{e.errno}"


@kit.tool("connect", "Connect to a TCP port on the loopback.", {"port": {"type": "integer"}},
          ["port"])
async def connect(args, ctx):
    try:
        with socket.create_connection(("127.0.0.1", args["port"]), timeout=2) as s:
            return "CONNECTED:" + s.recv(64).decode(errors="replace")
    except OSError as e:
        return f"DENIED:{type(e).__name__}:{e.errno}"


if __name__ == "__main__":
    kit.run()
