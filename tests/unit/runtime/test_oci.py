from ember.runtime.oci import AGENT_MOUNT, ContainerConfig, oci_config


def config(**overrides: object) -> dict:
    base = dict(
        rootfs="/s/rootfs",
        hostname="sandbox",
        agent_dir="/opt/agent",
        agent_user="vercel-sandbox",
        agent_workdir="/vercel/sandbox",
        cgroups_path="/ember/s1",
        vcpus=2,
        memory_mib=4096,
        pids_max=512,
        seccomp={"defaultAction": "SCMP_ACT_ERRNO"},
    )
    base.update(overrides)
    return oci_config(ContainerConfig(**base))  # type: ignore[arg-type]


def test_namespaces_and_user_mapping() -> None:
    without = {ns["type"] for ns in config()["linux"]["namespaces"]}
    assert without == {"pid", "ipc", "uts", "mount", "cgroup", "network"}
    shifted = config(id_shift=1_000_000_000)["linux"]
    assert {"type": "user"} in shifted["namespaces"]
    assert shifted["uidMappings"] == [{"containerID": 0, "hostID": 1_000_000_000, "size": 65536}]
    assert shifted["gidMappings"] == shifted["uidMappings"]


def test_joining_an_existing_network_namespace() -> None:
    namespaces = config(netns_path="/run/netns/s1")["linux"]["namespaces"]
    assert {"type": "network", "path": "/run/netns/s1"} in namespaces


def test_limits() -> None:
    resources = config()["linux"]["resources"]
    assert resources["memory"]["limit"] == 4096 * 1024 * 1024
    assert resources["cpu"] == {"quota": 200_000, "period": 100_000}
    assert resources["pids"] == {"limit": 512}
    assert resources["devices"] == [{"allow": False, "access": "rwm"}]


def test_privileges_are_dropped() -> None:
    process = config()["process"]
    caps = process["capabilities"]
    assert caps["bounding"] == caps["effective"] == caps["permitted"]
    for dangerous in (
        "CAP_SYS_ADMIN",
        "CAP_NET_RAW",
        "CAP_SYS_PTRACE",
        "CAP_SYS_MODULE",
        "CAP_NET_ADMIN",
    ):
        assert dangerous not in caps["bounding"]
    assert caps["ambient"] == [] and caps["inheritable"] == []
    assert process["noNewPrivileges"] is True
    linux = config()["linux"]
    assert "/proc/kcore" in linux["maskedPaths"] and "/proc/sys" in linux["readonlyPaths"]
    assert linux["seccomp"] == {"defaultAction": "SCMP_ACT_ERRNO"}


def test_agent_is_pid_one_from_a_read_only_mount() -> None:
    generated = config()
    assert generated["process"]["args"][:4] == [
        "/usr/bin/python3",
        "-I",
        "-S",
        f"{AGENT_MOUNT}/__main__.py",
    ]
    agent_mount = next(m for m in generated["mounts"] if m["destination"] == AGENT_MOUNT)
    assert agent_mount["source"] == "/opt/agent" and "ro" in agent_mount["options"]
    assert generated["root"] == {"path": "/s/rootfs", "readonly": False}


def test_session_files_are_bind_mounted_read_only_unless_writable() -> None:
    mounts = config(
        bind_files={"/etc/resolv.conf": "/s/etc/resolv.conf"},
        writable_files={"/etc/hosts": "/s/upper/hosts"},
    )["mounts"]
    resolv = next(m for m in mounts if m["destination"] == "/etc/resolv.conf")
    assert resolv["source"] == "/s/etc/resolv.conf" and "ro" in resolv["options"]
    hosts = next(m for m in mounts if m["destination"] == "/etc/hosts")
    assert hosts["source"] == "/s/upper/hosts"
    assert "rw" in hosts["options"] and "ro" not in hosts["options"]
