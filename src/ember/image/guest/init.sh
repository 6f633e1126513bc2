#!/bin/busybox sh
# Ember's microVM init (the initramfs's /init): load the virtio drivers,
# mount the session's disk, then become the agent on it (switch_root).
# Parameters come on the kernel command line as ember.<name>=<value>.
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

fail() {
    echo "ember-init: $*" >/dev/console
    poweroff -f
}

for module in $(cat /modules); do
    insmod "/lib/modules/$module.ko" || echo "ember-init: cannot load $module" >/dev/console
done

grep -q "ember.probe=1" /proc/cmdline && {
    echo "EMBER-PROBE-OK" >/dev/console  # the acceleration probe needs no more
    poweroff -f
}

user=root; workdir=/; hostname=sandbox; address=; gateway=
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        ember.time=*) date -u -s "@${arg#*=}" >/dev/null ;;
        ember.user=*) user="${arg#*=}" ;;
        ember.workdir=*) workdir="${arg#*=}" ;;
        ember.hostname=*) hostname="${arg#*=}" ;;
        ember.address=*) address="${arg#*=}" ;;
        ember.gateway=*) gateway="${arg#*=}" ;;
    esac
done

tries=0
while [ ! -b /dev/vda ]; do
    tries=$((tries + 1))
    [ "$tries" -gt 200 ] && fail "no root disk"
    sleep 0.02
done
mkdir -p /newroot
mount -t ext4 -o rw,noatime /dev/vda /newroot || fail "cannot mount the root disk"

port=
for p in /sys/class/virtio-ports/*; do
    [ "$(cat "$p/name" 2>/dev/null)" = ember.agent ] && port="/dev/${p##*/}"
done
[ -n "$port" ] || fail "no agent port"

# The agent, from this initramfs, on a tmpfs: never part of the session's disk.
mkdir -p /newroot/.ember
mount -t tmpfs -o mode=0755,size=16m tmpfs /newroot/.ember
cp -r /agent /newroot/.ember/agent

# The installation's egress CA, for header injection: the image's bundle
# plus the CA, bound over the bundle for this boot only (never written to disk).
if [ -f /ember-ca.crt ]; then
    cp /ember-ca.crt /newroot/.ember/ember-egress-ca.crt
    bundle=/newroot/etc/ssl/certs/ca-certificates.crt
    if [ -f "$bundle" ]; then
        cat "$bundle" /ember-ca.crt >/newroot/.ember/ca-bundle.crt
        mount --bind /newroot/.ember/ca-bundle.crt "$bundle"
    fi
    export SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
    export REQUESTS_CA_BUNDLE=$SSL_CERT_FILE CURL_CA_BUNDLE=$SSL_CERT_FILE
    export NODE_EXTRA_CA_CERTS=/.ember/ember-egress-ca.crt
fi

hostname "$hostname"
echo "$hostname" >/newroot/etc/hostname
printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t%s\n' \
    "$hostname" >/newroot/etc/hosts
ip link set lo up
if [ -n "$address" ]; then
    ip addr add "$address" dev eth0 && ip link set eth0 up || fail "cannot configure eth0"
    [ -n "$gateway" ] && ip route add default via "$gateway"
    echo "nameserver $gateway" >/newroot/etc/resolv.conf
else
    : >/newroot/etc/resolv.conf
fi

for fs in proc sys dev; do
    mkdir -p "/newroot/$fs"
    mount --move "/$fs" "/newroot/$fs"
done
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts /newroot/dev/pts
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /newroot/dev/shm
[ -e /newroot/dev/ptmx ] || ln -s pts/ptmx /newroot/dev/ptmx
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /newroot/run

echo "ember-init: starting the agent" >/dev/console
exec switch_root /newroot /usr/bin/python3 -I -S /.ember/agent/__main__.py \
    --user "$user" --workdir "$workdir" --serial "$port"
