#!/bin/sh
# Builds work/l1.img: the cached base rootfs (cache/base-<key>/) + the agent installed from its Debian
# package (make deb, dpkg -i) + its configuration + the L2 guest + the (inactive) baseline.
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

# The agent's configuration first: dpkg keeps an existing config.toml, as for a user. Its metrics go where
# node_exporter's textfile collector reads them (the directory Debian's prometheus-node-exporter makes).
mkdir -p "$ROOT/etc/passthrough-agent" "$ROOT/var/lib/prometheus/node-exporter"
cat >"$ROOT/etc/passthrough-agent/config.toml" <<'TOML'
[agent]
metrics-file = "/var/lib/prometheus/node-exporter/passthrough_agent.prom"

[libvirt]
uri = "qemu:///system"

[[card]]
name = "fpga0"
address = "0000:01:00"
ids = ["8086:10d3", "8086:100e"]
guest = "l2"
host-driver = "auto"
when-guest-stops = "host"
reflash-guard = true
TOML
# The agent from its Debian package, as a user installs it (issue 13): `make deb` from the release binary,
# then dpkg in the image; its dependencies are in the base already. The configuration above is an edited
# conffile for dpkg, kept (--force-confold). E2E_AGENT_SRC: another checkout of the agent (default: this one).
SRC=${E2E_AGENT_SRC:-$REPO}
log "make -C $SRC deb; dpkg -i in the image"
rm -rf "$WORK/deb"; mkdir -p "$WORK/deb"
make -C "$SRC" --no-print-directory deb BINARY="$SRC/.build/release/passthrough-agent" DEB_OUTDIR="$WORK/deb" \
    >"$WORK/make-deb.log" 2>&1 || { tail -30 "$WORK/make-deb.log"; exit 1; }
DEB=$(ls "$WORK"/deb/passthrough-agent_*.deb)
in_root() { chroot "$ROOT" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive "$@" </dev/null; }
cp "$DEB" "$ROOT/tmp/passthrough-agent.deb"
in_root dpkg -i --force-confold --force-confdef /tmp/passthrough-agent.deb >"$WORK/dpkg-install.log" 2>&1 \
    || { cat "$WORK/dpkg-install.log"; exit 1; }
rm "$ROOT/tmp/passthrough-agent.deb"
[ -L "$ROOT/etc/systemd/system/multi-user.target.wants/passthrough-agent.service" ] \
    || { echo "the package did not enable passthrough-agent.service"; exit 1; }
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
