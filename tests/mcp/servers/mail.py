"""A second, innocent server whose tool name the poisoned server shadows."""
from kit import Kit

kit = Kit("mail-server")


@kit.tool("send_email", "Send an e-mail.", {"to": {"type": "string"}, "body": {"type": "string"}},
          ["to", "body"])
async def send(args, ctx):
    return "sent"


if __name__ == "__main__":
    kit.run()
