"""The Sandbox contract: what a backend promises, by name.

A backend (``shieldwall.sandbox.types.Backend``) lists the guarantees it enforces in
``guarantees``; the escape suite in ``tests/sandbox`` runs, for each backend, exactly the
attack programs whose guarantee it claims. Every backend, whatever it claims, enforces
the wall-clock limit from the parent, caps stdout/stderr (a run that writes more is
stopped: ``output_limit``), starts the program with only the environment the policy
granted, and redacts granted secret values from what the program prints.

Per backend:

- ``gvisor``: user-space kernel (runsc, ptrace platform), OCI bundle, no network. Claims
  no_network, no_host_files, no_host_processes, no_host_env, unprivileged,
  kernel_boundary, memory_limit, cpu_limit, disk_limit, kills_all. Its Sentry implements
  ptrace, namespaces and the like itself, so the host seccomp deny list is not claimed.
- ``bwrap``: user/pid/net/ipc/uts/mount/cgroup namespaces, the seccomp deny list, a
  per-run cgroup, uid 65534 with no capabilities (one-shot programs run as pid 1 of
  their pid namespace; see :mod:`shieldwall.sandbox.bwrap`). The same isolation for a
  long-lived command with stdio pipes (an MCP server): :func:`shieldwall.sandbox.wrap_command`. Claims the above minus
  kernel_boundary, plus syscall_filter, pids_limit (with a cgroup), tmp_limit,
  proxy_network.
- ``wasm``: CPython for WASI under wasmtime: no system calls at all, only the work
  directory preopened. Claims no_network, no_host_files, no_host_processes, no_host_env,
  no_syscalls, memory_limit, cpu_limit (fuel), disk_limit, kills_all. Python only.
- ``process``: no isolation (rlimits, scrubbed environment, uid 65534 when root). Claims
  cpu_limit, memory_limit, and pids_limit and kills_all with a cgroup. Refused unless
  ``sandbox.allow_weak``.
"""

from __future__ import annotations

GUARANTEES: dict[str, str] = {
    "no_network": "no route to any host, the host's loopback included; no DNS",
    "proxy_network": "network='proxy': the only way out is the egress proxy's Unix socket",
    "no_host_files": "host files outside the system's read-only /usr and the generated /etc "
                     "are invisible; nothing outside the work directory is writable",
    "no_host_processes": "host processes cannot be seen, traced or signalled",
    "no_host_env": "the host's environment variables are absent (only granted ones)",
    "unprivileged": "runs as uid 65534 inside (a fresh unprivileged uid on the host) with no "
                    "capabilities; setuid binaries gain nothing",
    "syscall_filter": "ptrace, mount, namespaces, keyrings, bpf, perf, io_uring, modules, "
                      "kexec and similar system calls fail with EPERM",
    "no_syscalls": "the guest has no system calls at all, only WASI functions",
    "kernel_boundary": "system calls are served by a user-space kernel, not the host's",
    "memory_limit": "memory is bounded (cgroup, RLIMIT_AS or WASM linear memory)",
    "cpu_limit": "CPU time is bounded (RLIMIT_CPU or fuel)",
    "pids_limit": "the number of processes and threads is bounded (pids cgroup)",
    "disk_limit": "the work directory has a quota (a tmpfs of that size when root)",
    "tmp_limit": "/tmp and /dev/shm are small tmpfs",  # noqa: S108
    "wall_timeout": "the run is stopped at its wall-clock limit",
    "output_limit": "stdout/stderr are capped; more stops the run",
    "kills_all": "no process of the run outlives it",
    "secret_redaction": "granted secret values are redacted from stdout/stderr",
    "persistent_workspace": "named workspaces keep their files between sandboxes",
    "subprocesses": "commands (argv) and shell code can run, not only Python source",
}
