"""A seccomp-BPF filter built in pure Python, handed to bubblewrap with ``--seccomp FD``.

The filter is a deny list on top of the namespaces: it returns ``EPERM`` for the system
calls that reach kernel attack surface a sandboxed program has no use for (tracing,
mounting, keyrings, eBPF, perf, module loading, kexec, new namespaces, io_uring ...). A
foreign architecture (x32 or 32-bit compat calls on x86-64) kills the process, so the
numbers below cannot be dodged through another syscall table. The program format is the
classic BPF of ``linux/filter.h`` run over ``struct seccomp_data`` (``linux/seccomp.h``).
"""

from __future__ import annotations

import errno
import os
import platform
import struct
from dataclasses import dataclass

# struct seccomp_data offsets
_OFF_NR = 0
_OFF_ARCH = 4
_OFF_ARG0 = 16  # args[i] at 16 + 8*i; the low 32 bits come first on little-endian


def _arg_lo(i: int) -> int:
    return _OFF_ARG0 + 8 * i


# BPF opcodes
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_JSET_K = 0x45
_RET_K = 0x06

RET_KILL_PROCESS = 0x80000000
RET_ALLOW = 0x7FFF0000
RET_ERRNO = 0x00050000

AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_AARCH64 = 0xC00000B7
_X32_SYSCALL_BIT = 0x40000000

# Namespace flags refused on clone(2); clone3(2) gets ENOSYS so libc falls back to clone.
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
NAMESPACE_FLAGS = (
    CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER
    | CLONE_NEWPID | CLONE_NEWNET
)

TIOCSTI = 0x5412  # push bytes into the terminal's input queue
TIOCLINUX = 0x541C

# The deny list, by name. Each is refused with EPERM.
DENIED: tuple[str, ...] = (
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    "mount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen",
    "fsconfig", "fsmount", "fspick", "mount_setattr",
    "unshare", "setns",
    "keyctl", "add_key", "request_key",
    "bpf", "perf_event_open", "userfaultfd", "fanotify_init",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "reboot", "swapon", "swapoff", "acct", "quotactl", "syslog", "vhangup",
    "sethostname", "setdomainname", "settimeofday", "clock_settime", "clock_adjtime",
    "adjtimex", "open_by_handle_at", "name_to_handle_at", "lookup_dcookie",
    # x86-64 only
    "iopl", "ioperm", "uselib", "_sysctl", "create_module", "get_kernel_syms",
    "query_module", "nfsservctl",
)

# x86-64: arch/x86/entry/syscalls/syscall_64.tbl
_X86_64: dict[str, int] = {
    "ioctl": 16, "clone": 56, "uselib": 134, "pivot_root": 155, "_sysctl": 156,
    "adjtimex": 159, "chroot": 161, "acct": 163, "settimeofday": 164, "mount": 165,
    "umount2": 166, "swapon": 167, "swapoff": 168, "reboot": 169, "sethostname": 170,
    "setdomainname": 171, "iopl": 172, "ioperm": 173, "create_module": 174,
    "init_module": 175, "delete_module": 176, "get_kernel_syms": 177, "query_module": 178,
    "quotactl": 179, "nfsservctl": 180, "ptrace": 101, "syslog": 103, "vhangup": 153,
    "lookup_dcookie": 212, "clock_settime": 227, "kexec_load": 246, "add_key": 248,
    "request_key": 249, "keyctl": 250, "unshare": 272, "perf_event_open": 298,
    "fanotify_init": 300, "name_to_handle_at": 303, "open_by_handle_at": 304,
    "clock_adjtime": 305, "setns": 308, "process_vm_readv": 310, "process_vm_writev": 311,
    "kcmp": 312, "finit_module": 313, "kexec_file_load": 320, "bpf": 321,
    "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426,
    "io_uring_register": 427, "open_tree": 428, "move_mount": 429, "fsopen": 430,
    "fsconfig": 431, "fsmount": 432, "fspick": 433, "clone3": 435, "pidfd_getfd": 438,
    "mount_setattr": 442,
}

# aarch64: the generic table, include/uapi/asm-generic/unistd.h
_AARCH64: dict[str, int] = {
    "ioctl": 29, "lookup_dcookie": 18, "umount2": 39, "mount": 40, "pivot_root": 41,
    "chroot": 51, "vhangup": 58, "quotactl": 60, "acct": 89, "unshare": 97,
    "kexec_load": 104, "init_module": 105, "delete_module": 106, "clock_settime": 112,
    "syslog": 116, "ptrace": 117, "reboot": 142, "sethostname": 161, "setdomainname": 162,
    "settimeofday": 170, "adjtimex": 171, "add_key": 217, "request_key": 218, "keyctl": 219,
    "clone": 220, "swapon": 224, "swapoff": 225, "perf_event_open": 241,
    "fanotify_init": 262, "name_to_handle_at": 264, "open_by_handle_at": 265,
    "clock_adjtime": 266, "setns": 268, "process_vm_readv": 270, "process_vm_writev": 271,
    "kcmp": 272, "finit_module": 273, "bpf": 280, "userfaultfd": 282,
    "kexec_file_load": 294, "io_uring_setup": 425, "io_uring_enter": 426,
    "io_uring_register": 427, "open_tree": 428, "move_mount": 429, "fsopen": 430,
    "fsconfig": 431, "fsmount": 432, "fspick": 433, "clone3": 435, "pidfd_getfd": 438,
    "mount_setattr": 442,
}

_ARCHES: dict[str, tuple[int, dict[str, int]]] = {
    "x86_64": (AUDIT_ARCH_X86_64, _X86_64),
    "aarch64": (AUDIT_ARCH_AARCH64, _AARCH64),
}


class UnsupportedArch(RuntimeError):
    """No syscall table for this machine: the bwrap backend refuses to run unfiltered."""


@dataclass(frozen=True, slots=True)
class _Insn:
    code: int
    k: int
    jt: str | int = 0  # a label or a relative offset
    jf: str | int = 0


class _Assembler:
    """Tiny BPF assembler with forward labels (BPF jumps only go forward)."""

    def __init__(self) -> None:
        self.items: list[_Insn | str] = []

    def label(self, name: str) -> None:
        self.items.append(name)

    def ld(self, off: int) -> None:
        self.items.append(_Insn(_LD_W_ABS, off))

    def jeq(self, k: int, jt: str | int = 0, jf: str | int = 0) -> None:
        self.items.append(_Insn(_JEQ_K, k, jt, jf))

    def jge(self, k: int, jt: str | int = 0, jf: str | int = 0) -> None:
        self.items.append(_Insn(_JGE_K, k, jt, jf))

    def jset(self, k: int, jt: str | int = 0, jf: str | int = 0) -> None:
        self.items.append(_Insn(_JSET_K, k, jt, jf))

    def ret(self, k: int) -> None:
        self.items.append(_Insn(_RET_K, k))

    def assemble(self) -> bytes:
        labels: dict[str, int] = {}
        pc = 0
        for it in self.items:
            if isinstance(it, str):
                labels[it] = pc
            else:
                pc += 1
        out = bytearray()
        pc = 0
        for it in self.items:
            if isinstance(it, str):
                continue

            def rel(target: str | int, here: int = pc) -> int:
                if isinstance(target, int):
                    return target
                off = labels[target] - here - 1
                if not 0 <= off <= 255:
                    raise ValueError(f"BPF jump to {target} out of range ({off})")
                return off

            out += struct.pack("<HBBI", it.code, rel(it.jt), rel(it.jf), it.k)
            pc += 1
        if pc > 4096:
            raise ValueError("BPF program too long")
        return bytes(out)


def build_filter(arch: str | None = None, denied: tuple[str, ...] = DENIED) -> bytes:
    """The filter program (an array of ``struct sock_filter``) for ``arch``."""
    arch = arch or platform.machine()
    if arch not in _ARCHES:
        raise UnsupportedArch(f"no seccomp syscall table for {arch!r}")
    audit_arch, table = _ARCHES[arch]
    eperm = RET_ERRNO | errno.EPERM
    a = _Assembler()
    a.ld(_OFF_ARCH)
    a.jeq(audit_arch, jt=1)
    a.ret(RET_KILL_PROCESS)
    a.ld(_OFF_NR)
    if arch == "x86_64":
        a.jge(_X32_SYSCALL_BIT, jt="kill")
    for name in denied:
        nr = table.get(name)
        if nr is not None:
            a.jeq(nr, jt="eperm")
    a.jeq(table["clone3"], jt="enosys")
    a.jeq(table["clone"], jt="clone")
    a.jeq(table["ioctl"], jt="ioctl")
    a.ret(RET_ALLOW)
    a.label("clone")
    a.ld(_arg_lo(0))
    a.jset(NAMESPACE_FLAGS, jt="eperm")
    a.ret(RET_ALLOW)
    a.label("ioctl")
    a.ld(_arg_lo(1))
    a.jeq(TIOCSTI, jt="eperm")
    a.jeq(TIOCLINUX, jt="eperm")
    a.ret(RET_ALLOW)
    a.label("eperm")
    a.ret(eperm)
    a.label("enosys")
    a.ret(RET_ERRNO | errno.ENOSYS)
    a.label("kill")
    a.ret(RET_KILL_PROCESS)
    return a.assemble()


_CACHE: dict[str, bytes] = {}


def program() -> bytes:
    """The assembled filter (built once per process)."""
    prog = _CACHE.get("prog")
    if prog is None:
        prog = _CACHE["prog"] = build_filter()
    return prog


def filter_fd() -> int:
    """A fresh memory file holding the filter, positioned at 0, for ``--seccomp FD``.

    bwrap reads the FD to its end; the caller closes its copy after spawning.
    """
    prog = _CACHE.get("prog")
    if prog is None:
        prog = _CACHE["prog"] = build_filter()
    fd = os.memfd_create("shieldwall-seccomp", 0)
    os.write(fd, prog)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def supported() -> bool:
    return platform.machine() in _ARCHES
