#!/bin/sh
# L1 base image recipe: Debian 12 (or SUITE: trixie is Debian 13) + systemd + udev + libvirt + qemu +
# python3 and python3-apt (Ansible's modules run on the image: build-image.sh writes it with the role) +
# the L0 Debian kernel's modules. Its sha256 (with the suite and the kernel version) is the cache key of
# the base rootfs: change anything here and the next `make e2e` rebuilds the base from nothing.
# Usage: base-recipe.sh ROOTFS KVER MIRROR [SUITE]
set -eu
ROOT=$1 KVER=$2 MIRROR=$3 SUITE=${4:-bookworm}
PACKAGES=systemd,systemd-sysv,libpam-systemd,udev,kmod,dbus,iproute2,pciutils,procps,libvirt-daemon-system,libvirt-daemon-driver-qemu,libvirt-clients,qemu-system-x86,qemu-guest-agent,libvirt0,libudev1,libsystemd0,libstdc++6,python3,python3-apt

debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOT" "$MIRROR" >"$ROOT.debootstrap.log" 2>&1 \
    || { tail -30 "$ROOT.debootstrap.log"; exit 1; }

# Kernel modules of the L0 Debian kernel (the same kernel boots L1 and L2); drop what no card needs.
mkdir -p "$ROOT/lib/modules"
cp -a "/lib/modules/$KVER" "$ROOT/lib/modules/"
K="$ROOT/lib/modules/$KVER/kernel"
rm -rf "$K/drivers/gpu" "$K/drivers/media" "$K/drivers/net/wireless" "$K/sound" "$K/drivers/infiniband" \
       "$K/drivers/staging" "$K/drivers/bluetooth" "$K/net/bluetooth" "$K/net/wireless" "$K/net/mac80211" \
       "$K/drivers/isdn" "$K/drivers/iio" "$K/drivers/hid" "$K/drivers/input/touchscreen" \
       "$K/drivers/usb/gadget" "$K/drivers/usb/serial" "$K/drivers/net/usb" "$K/drivers/scsi/qla2xxx" \
       "$K/drivers/scsi/lpfc" "$K/drivers/net/ethernet/mellanox" "$K/drivers/net/ethernet/chelsio" \
       "$K/drivers/net/ethernet/qlogic" "$K/drivers/net/ethernet/broadcom" "$K/drivers/net/ethernet/sfc" \
       "$K/fs/btrfs" "$K/fs/xfs" "$K/fs/ocfs2" "$K/fs/gfs2" "$K/fs/ceph" "$K/fs/nfs" "$K/fs/smb" "$K/fs/f2fs"
chroot "$ROOT" depmod -a "$KVER"

# The L2 guest boots the same kernel (copied in by the per-run layer) with a busybox initramfs.
echo e2e-l1 >"$ROOT/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 e2e-l1\n' >"$ROOT/etc/hosts"
chroot "$ROOT" passwd -d root >/dev/null
: >"$ROOT/etc/fstab"
printf 'vfio\nvfio_iommu_type1\nvfio-pci\nvirtio_console\n' >"$ROOT/etc/modules-load.d/e2e.conf"

# Serial console autologin (debugging only; the harness uses qemu-guest-agent).
mkdir -p "$ROOT/etc/systemd/system/serial-getty@ttyS0.service.d"
printf '[Service]\nExecStart=\nExecStart=-/sbin/agetty --autologin root --keep-baud 115200 %%I $TERM\n' \
    >"$ROOT/etc/systemd/system/serial-getty@ttyS0.service.d/autologin.conf"

# Slow TCG: nothing periodic.
for unit in apt-daily.timer apt-daily-upgrade.timer man-db.timer fstrim.timer e2scrub_all.timer \
            e2scrub_reap.service logrotate.timer dpkg-db-backup.timer systemd-tmpfiles-clean.timer \
            systemd-networkd-wait-online.service systemd-timesyncd.service; do
    ln -sf /dev/null "$ROOT/etc/systemd/system/$unit"
done

# libvirt: root, no security driver (no AppArmor userspace here), no default network.
cat >>"$ROOT/etc/libvirt/qemu.conf" <<'CONF'
user = "root"
group = "root"
security_driver = "none"
CONF
rm -f "$ROOT/etc/libvirt/qemu/networks/autostart/default.xml"
# libvirtd started at boot (not only on socket activation): the agent connects to it.
chroot "$ROOT" systemctl enable libvirtd.service >/dev/null 2>&1 || true
rm -rf "$ROOT/var/cache/apt/archives/"*.deb "$ROOT/var/lib/apt/lists/"* 
