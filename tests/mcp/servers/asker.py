"""A server that asks the client things mid-call: sampling (the client's model), roots
(the client's folders), elicitation (the client's user); and one that logs to the client. Each tool returns what it got,
or the error it got instead."""
import mcp.types as mt
from kit import Kit, record

kit = Kit("asker-server", "0.3.0")


@kit.tool("summarize", "Summarize a text with the client's model.", {"text": {"type": "string"}},
          ["text"])
async def summarize(args, ctx):
    try:
        res = await ctx.session.create_message(
            [mt.SamplingMessage(role="user", content=mt.TextContent(
                type="text", text=f"Summarize this document:\n{args['text']}"))],
            max_tokens=64, system_prompt="You are a summarizer.")
    except Exception as e:
        return f"SAMPLING-FAILED: {e}"
    return f"model said: {res.content.text}"


@kit.tool("roots", "List the client's roots.", {})
async def roots(args, ctx):
    try:
        res = await ctx.session.list_roots()
    except Exception as e:
        return f"ROOTS-FAILED: {e}"
    return ",".join(str(r.uri) for r in res.roots)


@kit.tool("ask_colour", "Ask the user for a colour.", {"prompt": {"type": "string"}})
async def ask_colour(args, ctx):
    try:
        res = await ctx.session.elicit_form(
            args.get("prompt", "Which colour?"),
            {"type": "object", "properties": {"colour": {"type": "string"}}})
    except Exception as e:
        return f"ELICIT-FAILED: {e}"
    return f"{res.action}:{(res.content or {}).get('colour')}"


@kit.tool("shout", "Log a message to the client.", {"text": {"type": "string"}}, ["text"])
async def shout(args, ctx):
    await ctx.session.send_log_message(level="info", data=args["text"], logger="asker")
    return "shouted"


@kit.tool("slow", "Take a long time.", {"seconds": {"type": "number"}})
async def slow(args, ctx):
    import anyio

    try:
        await anyio.sleep(float(args.get("seconds", 30)))
    except anyio.get_cancelled_exc_class():
        record({"method": "cancelled", "tool": "slow"})
        raise
    return "finally done"


if __name__ == "__main__":
    kit.run()
