"""The seccomp program, checked by running it: a small classic-BPF interpreter evaluates the
filter on synthetic ``struct seccomp_data`` for every system call number."""

from __future__ import annotations

import errno
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shieldwall.sandbox import seccomp


def run_bpf(prog: bytes, nr: int, arch: int, args: tuple[int, ...] = (0,) * 6) -> int:
    data = struct.pack("<iI", nr, arch) + struct.pack("<Q", 0) + b"".join(
        struct.pack("<Q", a & (2**64 - 1)) for a in (*args, 0, 0, 0, 0, 0, 0)[:6])
    insns = [struct.unpack_from("<HBBI", prog, i) for i in range(0, len(prog), 8)]
    acc, pc = 0, 0
    for _ in range(10_000):
        code, jt, jf, k = insns[pc]
        if code == 0x20:
            acc = struct.unpack_from("<I", data, k)[0]
            pc += 1
        elif code == 0x06:
            return k
        elif code in (0x15, 0x35, 0x45):
            cond = {0x15: acc == k, 0x35: acc >= k, 0x45: bool(acc & k)}[code]
            pc += 1 + (jt if cond else jf)
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")
    raise AssertionError("no return")


PROG = seccomp.build_filter("x86_64")
ARCH = seccomp.AUDIT_ARCH_X86_64
EPERM = seccomp.RET_ERRNO | errno.EPERM
DENIED_NRS = {seccomp._X86_64[n] for n in seccomp.DENIED if n in seccomp._X86_64}


def test_program_is_whole_instructions_and_short() -> None:
    assert len(PROG) % 8 == 0
    assert len(PROG) // 8 < 200


@pytest.mark.parametrize("name", ["ptrace", "mount", "umount2", "keyctl", "add_key", "bpf",
                                  "perf_event_open", "kexec_load", "init_module", "unshare",
                                  "setns", "pivot_root", "userfaultfd", "io_uring_setup",
                                  "swapon", "reboot", "finit_module", "delete_module"])
def test_named_dangerous_calls_get_eperm(name: str) -> None:
    assert run_bpf(PROG, seccomp._X86_64[name], ARCH) == EPERM


@given(st.integers(min_value=0, max_value=600))
def test_every_other_call_is_allowed(nr: int) -> None:
    expected = EPERM if nr in DENIED_NRS else seccomp.RET_ALLOW
    if nr == seccomp._X86_64["clone3"]:
        expected = seccomp.RET_ERRNO | errno.ENOSYS
    assert run_bpf(PROG, nr, ARCH) == expected


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_clone_with_any_namespace_flag_is_refused(flags: int) -> None:
    r = run_bpf(PROG, seccomp._X86_64["clone"], ARCH, (flags, 0, 0, 0, 0, 0))
    if flags & seccomp.NAMESPACE_FLAGS:
        assert r == EPERM
    else:
        assert r == seccomp.RET_ALLOW


def test_plain_fork_style_clone_is_allowed() -> None:
    assert run_bpf(PROG, 56, ARCH, (0x01200011, 0, 0, 0, 0, 0)) == seccomp.RET_ALLOW


def test_tiocsti_ioctl_is_refused_other_ioctls_are_not() -> None:
    assert run_bpf(PROG, 16, ARCH, (1, 0x5412, 0, 0, 0, 0)) == EPERM
    assert run_bpf(PROG, 16, ARCH, (1, 0x5401, 0, 0, 0, 0)) == seccomp.RET_ALLOW  # TCGETS


def test_x32_syscalls_kill_the_process() -> None:
    assert run_bpf(PROG, 0x40000000 | 101, ARCH) == seccomp.RET_KILL_PROCESS
    assert run_bpf(PROG, 0x40000000, ARCH) == seccomp.RET_KILL_PROCESS


def test_foreign_architecture_kills_the_process() -> None:
    i386 = 0x40000003
    assert run_bpf(PROG, 0, i386) == seccomp.RET_KILL_PROCESS


def test_aarch64_table_builds_and_refuses_ptrace() -> None:
    prog = seccomp.build_filter("aarch64")
    assert run_bpf(prog, 117, seccomp.AUDIT_ARCH_AARCH64) == EPERM
    assert run_bpf(prog, 63, seccomp.AUDIT_ARCH_AARCH64) == seccomp.RET_ALLOW  # read


def test_unknown_architecture_is_refused() -> None:
    with pytest.raises(seccomp.UnsupportedArch):
        seccomp.build_filter("mips")
