import errno

import pytest

from ember.runtime.oci import DEFAULT_CAPABILITIES
from ember.runtime.seccomp import (
    DOCKER_SYS_ADMIN_ONLY,
    SeccompProfileError,
    load_docker_profile,
    oci_seccomp,
)

PROFILE = {
    "defaultAction": "SCMP_ACT_ERRNO",
    "defaultErrnoRet": 38,
    "syscalls": [
        {
            "names": ["read", "write", "mount", "unshare", "clone", "keyctl"],
            "action": "SCMP_ACT_ALLOW",
        },
        {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["amd64"]}},
        {"names": ["s390_thing"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["s390x"]}},
        {"names": ["chroot"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_CHROOT"]}},
        {"names": ["bpf"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
        {
            "names": ["bpf"],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": 1,
            "excludes": {"caps": ["CAP_SYS_ADMIN"]},
        },
    ],
}


def allowed(resolved: dict) -> set[str]:
    return {
        n
        for rule in resolved["syscalls"]
        if rule["action"] == "SCMP_ACT_ALLOW" and "args" not in rule
        for n in rule["names"]
    }


def test_resolves_arches_and_capabilities() -> None:
    resolved = oci_seccomp(PROFILE, DEFAULT_CAPABILITIES, machine="x86_64")
    assert resolved["architectures"][0] == "SCMP_ARCH_X86_64"
    assert resolved["defaultErrnoRet"] == 38
    names = allowed(resolved)
    assert {"read", "write", "arch_prctl", "chroot"} <= names
    assert not names & {"s390_thing", "bpf", "mount", "unshare", "keyctl", "clone"}


def test_clone_only_without_namespace_flags_and_clone3_is_enosys() -> None:
    resolved = oci_seccomp(PROFILE, DEFAULT_CAPABILITIES, machine="x86_64")
    clone = next(r for r in resolved["syscalls"] if r["names"] == ["clone"])
    assert clone["args"][0]["op"] == "SCMP_CMP_MASKED_EQ" and clone["args"][0]["valueTwo"] == 0
    assert clone["args"][0]["value"] & 0x10000000  # CLONE_NEWUSER is in the mask
    clone3 = next(r for r in resolved["syscalls"] if r["names"] == ["clone3"])
    assert clone3["action"] == "SCMP_ACT_ERRNO" and clone3["errnoRet"] == errno.ENOSYS


def test_the_distribution_profile_becomes_dockers_policy() -> None:
    try:
        profile = load_docker_profile()
    except SeccompProfileError as exc:
        pytest.skip(str(exc))
    names = allowed(oci_seccomp(profile, DEFAULT_CAPABILITIES, machine="x86_64"))
    assert {"read", "openat", "execve", "ptrace", "wait4"} <= names
    assert not names & DOCKER_SYS_ADMIN_ONLY


def test_missing_profile_names_the_package() -> None:
    with pytest.raises(SeccompProfileError, match="golang-github-containers-common"):
        load_docker_profile("/nonexistent/seccomp.json")
