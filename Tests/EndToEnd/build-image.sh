#!/bin/sh
# Builds work/l1.img: the cached base rootfs (cache/base-SUITE-KEY/) + the agent's Debian package and its
# configuration, both by the Ansible role over a chroot + the L2 guest + the (inactive) baseline and floor.
# The base is rebuilt from nothing when its cache entry is absent (key: recipe hash + kernel).
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
# E2E_SUITE: the Debian suite of L1 (bookworm = Debian 12; trixie = Debian 13 runs the short tier in CI).
SUITE=${E2E_SUITE:-bookworm}
CACHE=$HERE/cache WORK=$HERE/work
[ "$SUITE" = bookworm ] || WORK=$HERE/work-$SUITE
mkdir -p "$CACHE" "$WORK"
START=$(date +%s.%N)
log() { echo "[$(date -u +%H:%M:%S)] build-image: $*"; }

KVER=$(ls /boot/vmlinuz-*-amd64 2>/dev/null | sed 's|/boot/vmlinuz-||' | sort -V | tail -1)
[ -n "$KVER" ] && [ -d "/lib/modules/$KVER" ] || { echo "no Debian kernel in /boot (run .ci/install-e2e-deps)"; exit 1; }

# The mirror comes from this machine's apt configuration, never hard-coded.
MIRROR=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ {print $2}' | grep -v -e security -e updates | head -1)
[ -n "$MIRROR" ] || MIRROR=$(awk '/^deb / && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null)
[ -n "$MIRROR" ] || MIRROR=$(awk '/^deb / {print ($2 ~ /^\[/ ? $3 : $2); exit}' /etc/apt/sources.list 2>/dev/null)
[ -n "$MIRROR" ] || { echo "no apt mirror found in /etc/apt"; exit 1; }

KEY=$( (cat "$HERE/base-recipe.sh"; echo "$SUITE $KVER") | sha256sum | cut -c1-16)
BASE=$CACHE/base-$SUITE-$KEY
if [ ! -e "$BASE/done" ]; then
    log "base image cache miss ($KEY): debootstrap $SUITE from $MIRROR"
    t0=$(date +%s)
    rm -rf "$BASE" "$BASE.tmp"; mkdir -p "$BASE.tmp"
    "$HERE/base-recipe.sh" "$BASE.tmp/rootfs" "$KVER" "$MIRROR" "$SUITE"
    echo "$(( $(date +%s) - t0 ))" >"$BASE.tmp/build-seconds"
    touch "$BASE.tmp/done"
    mv "$BASE.tmp" "$BASE"
    # Older cache entries of this suite are dead weight (and entries named before suites were).
    for old in "$CACHE"/base-*; do
        case "${old##*/base-}" in "$SUITE"-*|????????????????) [ "$old" = "$BASE" ] || rm -rf "$old" ;; esac
    done
    log "base built in $(cat "$BASE/build-seconds") s"
else
    log "base image cache hit ($SUITE, $KEY)"
fi

ROOT=$WORK/rootfs
rm -rf "$ROOT"
cp -a "$BASE/rootfs" "$ROOT"

# The agent as a lab installs it (issue 13): the Ansible role (packaging/ansible) over a chroot on the image
# tree installs the .deb (`make deb` from the release binary), writes config.toml from host variables, checks
# it with `passthrough-agent check` before it is in place, and enables the unit (nothing runs in a chroot;
# the boot starts it). E2E_AGENT_SRC: another checkout of the agent (default: this one).
SRC=${E2E_AGENT_SRC:-$REPO}
log "make -C $SRC deb"
rm -rf "$WORK/deb"; mkdir -p "$WORK/deb"
make -C "$SRC" --no-print-directory deb BINARY="$SRC/.build/release/passthrough-agent" DEB_OUTDIR="$WORK/deb" \
    >"$WORK/make-deb.log" 2>&1 || { tail -30 "$WORK/make-deb.log"; exit 1; }
DEB=$(ls "$WORK"/deb/passthrough-agent_*.deb)
command -v ansible-playbook >/dev/null || { echo "no ansible-playbook: run .ci/install-ansible (make e2e-deps does)"; exit 1; }
cat >"$WORK/l1-vars.yml" <<VARS
passthrough_agent_deb: $DEB
passthrough_agent_start: false
passthrough_agent_metrics_file: /var/lib/prometheus/node-exporter/passthrough_agent.prom
passthrough_agent_cards:
  - name: fpga0
    address: "0000:01:00"
    ids: ["8086:10d3", "8086:100e"]
    guest: l2
    host-driver: auto
    when-guest-stops: host
    reflash-guard: true
VARS
printf 'l1 ansible_connection=community.general.chroot ansible_host=%s ansible_python_interpreter=/usr/bin/python3\n' "$ROOT" \
    >"$WORK/l1-inventory"
# node_exporter's textfile directory (Debian's prometheus-node-exporter makes it) for the metrics.
mkdir -p "$ROOT/var/lib/prometheus/node-exporter"
log "ansible-playbook: the passthrough_agent role over a chroot on the image"
# `check` reads /proc (its own command line) and /sys (read-only here) as on a booted host.
mount -t proc proc "$ROOT/proc"; mount -t sysfs -o ro sysfs "$ROOT/sys"; played=0
ANSIBLE_ROLES_PATH="$REPO/packaging/ansible/roles" ANSIBLE_NOCOLOR=1 \
    ansible-playbook -i "$WORK/l1-inventory" "$REPO/packaging/ansible/test/site.yml" -e "@$WORK/l1-vars.yml" \
    >"$WORK/ansible.log" 2>&1 || played=$?
umount "$ROOT/sys" "$ROOT/proc"
[ $played -eq 0 ] || { tail -40 "$WORK/ansible.log"; exit 1; }
grep -q '^# Ansible managed' "$ROOT/etc/passthrough-agent/config.toml" \
    || { echo "the role did not write config.toml"; exit 1; }
[ -L "$ROOT/etc/systemd/system/multi-user.target.wants/passthrough-agent.service" ] \
    || { echo "the package did not enable passthrough-agent.service"; exit 1; }
rm -rf "$ROOT/var/cache/passthrough-agent"  # the role's copy of the package: 16 MB the image does not need
# The upgrade scenario's package: the same build one Debian revision later, as packaging/test-deb.sh makes it.
VERSION=$(dpkg-deb -f "$DEB" Version)
UPGRADED=${VERSION%-*}-$((${VERSION##*-} + 1))
rm -rf "$WORK/deb/v2"; dpkg-deb -R "$DEB" "$WORK/deb/v2"
sed -i "s/^Version: .*/Version: $UPGRADED/" "$WORK/deb/v2/DEBIAN/control"
mkdir -p "$ROOT/var/lib/e2e/upgrade"
# gzip -1: a minute less of xz on every image build; dpkg reads any of its formats.
dpkg-deb --root-owner-group -Zgzip -z1 -b "$WORK/deb/v2" "$ROOT/var/lib/e2e/upgrade/passthrough-agent_${UPGRADED}.deb" >/dev/null
log "installed passthrough-agent $VERSION from its package; $UPGRADED waits in /var/lib/e2e/upgrade"

# L2: the same kernel, a busybox initramfs, defined (persistent) but not autostarted.
L2=$ROOT/var/lib/e2e/l2
mkdir -p "$L2" "$ROOT/var/lib/e2e/baseline"
# The kernel uncompressed (an ELF vmlinux with a PVH entry, CONFIG_PVH=y): nested TCG spends
# tens of seconds decompressing a bzImage. Falls back to the bzImage.
if python3 "$HERE/extract-vmlinux.py" "/boot/vmlinuz-$KVER" "$L2/vmlinux"; then
    sed 's|/var/lib/e2e/l2/vmlinuz|/var/lib/e2e/l2/vmlinux|' "$HERE/l2/l2.xml" >"$WORK/l2.xml"
else
    cp "/boot/vmlinuz-$KVER" "$L2/vmlinuz"
    cp "$HERE/l2/l2.xml" "$WORK/l2.xml"
fi
IR=$WORK/l2-initramfs; rm -rf "$IR"; mkdir -p "$IR/bin" "$IR/proc" "$IR/sys" "$IR/dev"
cp /bin/busybox "$IR/bin/busybox"
# Applet links made here: `busybox --install` takes ~9 s in nested TCG.
for applet in sh mount cat cut basename dirname sleep echo ls grep tr insmod; do ln -s busybox "$IR/bin/$applet"; done
# virtio-serial for guest requests (scenario 21): the modules, loaded by init only when it is asked to.
mkdir -p "$IR/lib/modules"
for m in virtio/virtio_ring virtio/virtio virtio/virtio_pci_modern_dev virtio/virtio_pci_legacy_dev virtio/virtio_pci char/virtio_console; do
    src=/lib/modules/$KVER/kernel/drivers/$m.ko out=$IR/lib/modules/$(basename "$m").ko
    # busybox insmod takes plain ELF only; newer Debian kernels ship compressed modules.
    if [ -f "$src" ]; then cp "$src" "$out"
    elif [ -f "$src.xz" ]; then xz -dc "$src.xz" >"$out"
    elif [ -f "$src.zst" ]; then zstd -qdc "$src.zst" >"$out"
    else echo "no $m module for $KVER: scenario 21 will fail"; fi
done
cp "$HERE/l2/init" "$IR/init"
(cd "$IR" && find . | cpio -o -H newc --quiet | gzip -1) >"$L2/initrd.img"
cp "$WORK/l2.xml" "$L2/l2.xml"
cp "$WORK/l2.xml" "$ROOT/etc/libvirt/qemu/l2.xml"

# Baseline (udev RUN+= script users write today): installed, inactive until the harness enables it.
cp "$HERE/baseline/baseline-reattach" "$ROOT/usr/local/sbin/baseline-reattach"
cp "$HERE/baseline/90-baseline-reattach.rules" "$HERE/baseline/hostdev.xml" "$ROOT/var/lib/e2e/baseline/"
# The floor (issue 14): the same work done by the smallest C program, built here on L0 (Debian 12, as L1), installed
# inactive; the harness starts it as a transient unit only in its turn.
gcc -O2 -Wall -o "$ROOT/usr/local/sbin/passthrough-floor" "$HERE/floor/floor.c" \
    $(pkg-config --cflags --libs libvirt libudev libsystemd)
# E2E_AGENT_BEFORE: another build of the agent (a binary), raced in the floor round as "agent-before" (the same
# package, its ExecStart= pointed at this binary by a runtime drop-in): before/after of a change in one run.
if [ -n "${E2E_AGENT_BEFORE:-}" ]; then
    install -m 0755 "$E2E_AGENT_BEFORE" "$ROOT/usr/local/sbin/passthrough-agent-before"
fi

# qemu-ga syslogs every guest-exec and every status poll. A scenario that blocks the PCI layer blocks
# journald too (reading a device's uevent); once /dev/log's queue is full, qemu-ga blocks in syslog() and
# the harness loses its command channel. Without /dev/log its messages are dropped instead.
mkdir -p "$ROOT/etc/systemd/system/qemu-guest-agent.service.d"
printf '[Service]\nInaccessiblePaths=/run/systemd/journal/dev-log\n' \
    >"$ROOT/etc/systemd/system/qemu-guest-agent.service.d/e2e-no-syslog.conf"

# Rig self-test only (scenarios.py --mock-agent): a stand-in daemon, enabled by a runtime drop-in.
mkdir -p "$ROOT/var/lib/e2e/mock"
cp "$HERE/mock/mock-agent.sh" "$HERE/mock/mock.conf" "$ROOT/var/lib/e2e/mock/"

log "mkfs.ext4 -d"
rm -f "$WORK/l1.img"
mkfs.ext4 -q -F -L e2e-root -d "$ROOT" "$WORK/l1.img" 2G
echo "$KVER" >"$WORK/kver"
cp "$BASE/build-seconds" "$WORK/base-build-seconds"
echo "$(date +%s.%N) $START" | awk '{printf "%.1f\n", $1 - $2}' >"$WORK/image-build-seconds"
log "done: $WORK/l1.img (kernel $KVER)"
