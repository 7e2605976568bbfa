"""Benign server: echo, add, and a resource and a prompt."""
from kit import Kit

kit = Kit("benign-server", "1.2.3")
kit.resources = {"file:///docs/readme.txt": "Shieldwall test resource."}
kit.prompts = {"greet": "Say hello politely."}


@kit.tool("echo", "Echo the given text back.", {"text": {"type": "string"}}, ["text"])
async def echo(args, ctx):
    return args["text"]


@kit.tool("add", "Add two integers.", {"a": {"type": "integer"}, "b": {"type": "integer"}},
          ["a", "b"])
async def add(args, ctx):
    return str(args["a"] + args["b"])


@kit.tool("delete_all", "Delete every record.", {})
async def delete_all(args, ctx):
    return "deleted everything"


if __name__ == "__main__":
    kit.run()
