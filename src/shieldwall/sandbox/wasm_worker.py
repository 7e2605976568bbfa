"""Worker process of the wasm backend: runs one CPython-for-WASI guest under wasmtime.

Loads the compiled runtime named by argv[1], then waits for a JSON request on stdin's
first line ({"code", "env", "preopen", "fuel", "memory"}) and gives the guest the rest of
stdin, its own stdout and stderr (so a worker can be started before its run is known).
Exit status: the guest's; 152 (128+SIGXCPU) when fuel ran out; 125 for a trap or a
worker failure. Runs in its own process so that a wasmtime panic or a guest
stopped mid-write never touches the parent.
"""

from __future__ import annotations

import json
import os
import sys

_BOOT = ("import os, sys; os.chdir('/workspace'); _c = sys.argv.pop(1); "
         "exec(compile(_c, '<string>', 'exec'), {'__name__': '__main__', "
         "'__builtins__': __builtins__})")
EXIT_FUEL = 128 + 24
EXIT_TRAP = 125


def main() -> int:
    import wasmtime

    # load the runtime first: a worker is started ahead of its run and waits here
    cfg = wasmtime.Config()
    cfg.consume_fuel = True
    engine = wasmtime.Engine(cfg)
    module = wasmtime.Module.deserialize_file(engine, sys.argv[1])
    line = sys.stdin.buffer.readline()
    if not line:
        return 0
    req = json.loads(line)
    store = wasmtime.Store(engine)
    store.set_fuel(int(req["fuel"]))
    store.set_limits(memory_size=int(req["memory"]), table_elements=100_000, instances=4,
                     tables=8, memories=2)
    wasi = wasmtime.WasiConfig()
    # WASI has no working directory of its own: start the program in /workspace
    wasi.argv = ["python", "-c", _BOOT, req["code"]] if req.get("preopen") else \
        ["python", "-c", req["code"]]
    wasi.env = list(req["env"].items())
    wasi.inherit_stdin()
    wasi.inherit_stdout()
    wasi.inherit_stderr()
    if req.get("preopen"):
        wasi.preopen_dir(req["preopen"], "/workspace")
    store.set_wasi(wasi)
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    instance = linker.instantiate(store, module)
    start = instance.exports(store)["_start"]
    if not isinstance(start, wasmtime.Func):
        raise TypeError("the runtime has no _start function")
    try:
        start(store)
        code = 0
    except wasmtime.ExitTrap as e:
        code = e.code
    except wasmtime.Trap as e:
        msg = str(e)
        if "fuel" in msg:
            code = EXIT_FUEL
        else:
            sys.stderr.write(f"\n[wasm trap] {msg.splitlines()[0] if msg else ''}\n")
            code = EXIT_TRAP
    except wasmtime.WasmtimeError as e:
        msg = str(e)
        code = EXIT_FUEL if "fuel" in msg else EXIT_TRAP
        if code == EXIT_TRAP:
            sys.stderr.write(f"\n[wasm error] {msg.splitlines()[0] if msg else ''}\n")
    sys.stdout.flush()
    sys.stderr.flush()
    return code


if __name__ == "__main__":
    try:
        rc = main()
    except Exception as e:  # a worker failure, not the guest's
        sys.stderr.write(f"[wasm worker] {type(e).__name__}: {e}\n")
        rc = EXIT_TRAP
    os._exit(rc)
