#!/bin/sh
# The Debian package, checked as Debian and a Debian 12 host would see it:
#   1. `make deb BINARY=…`: the files where Debian wants them (and nothing under /usr/local or in /etc but
#      the conffile), every file root's, the conffile listed, Depends: from dpkg-shlibdeps with its glibc
#      floor, the binary stripped and still running, a completion per shell, a man page per subcommand,
#      a configuration that parses and lends no card, lintian clean (errors and warnings);
#   2. as root, with a Debian 12 rootfs (the e2e base, never written: an overlay, or a copy): install into
#      it with dpkg (enabled, the catalog compiled, the binary runs with the rootfs' libraries only),
#      edit the configuration, upgrade to a newer version (edit kept, no conffile prompt, still enabled),
#      disable and upgrade again (stays disabled), remove (configuration kept), purge (all gone), and
#      install over a configuration written before the package (--force-confold keeps it); then, with
#      stand-ins for a running systemd and udev, what install, upgrade and removal ask of them.
#
# Usage: packaging/test-deb.sh BINARY     (make deb-check BINARY=… runs it)
#   DEB_TEST_ROOTFS=DIR  the Debian 12 rootfs; default: Tests/EndToEnd/cache/base-bookworm-*/rootfs of this tree
# Exit status: 0 all passed, 1 something failed, 64 usage.
set -eu

[ $# -eq 1 ] && [ -x "$1" ] || { echo "usage: $0 RELEASE-BINARY" >&2; exit 64; }
binary=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
src=$(cd "$(dirname "$0")/.." && pwd)
package=passthrough-agent
arch=$(dpkg --print-architecture)
tmp=$(mktemp -d /tmp/test-deb.XXXXXX)
merged=""
failures=0

cleanup() {
    if [ -n "$merged" ] && mountpoint -q "$merged/proc"; then umount "$merged/proc"; fi
    if [ -n "$merged" ] && mountpoint -q "$merged"; then umount "$merged"; fi
    rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

pass() { echo "ok    $*"; }
fail() { echo "FAIL  $*"; failures=$((failures + 1)); }
check() { # check DESCRIPTION COMMAND...: passes when COMMAND succeeds
    description=$1; shift
    if "$@" >"$tmp/out" 2>&1; then pass "$description"; else fail "$description"; sed 's/^/      /' "$tmp/out"; fi
}

echo "== make deb BINARY=$binary"
make -C "$src" --no-print-directory deb BINARY="$binary" DEB_OUTDIR="$tmp" | sed 's/^/   /'
set -- "$tmp"/${package}_*_"$arch".deb
[ -f "$1" ] || { fail "make deb wrote no ${package}_VERSION_${arch}.deb"; exit 1; }
deb=$1
version=$(dpkg-deb -f "$deb" Version)
pass "built $(basename "$deb")"

# --- 1. What is in the package -----------------------------------------------------------------------
echo "== contents (dpkg-deb -c)"
dpkg-deb -c "$deb" >"$tmp/contents"
files=$(awk '{print $6}' "$tmp/contents" | sed 's|^\./|/|')
has() { echo "$files" | grep -qxF "$1"; }
for path in /usr/bin/$package /lib/systemd/system/$package.service /lib/udev/rules.d/90-$package.rules \
    /usr/lib/systemd/catalog/$package.catalog /usr/lib/modules-load.d/$package.conf \
    /usr/lib/sysctl.d/$package.conf /etc/$package/config.toml \
    /usr/share/bash-completion/completions/$package /usr/share/zsh/vendor-completions/_$package \
    /usr/share/fish/vendor_completions.d/$package.fish /usr/share/man/man1/$package.1.gz \
    /usr/share/doc/$package/copyright /usr/share/doc/$package/changelog.Debian.gz \
    /usr/share/doc/$package/examples/config.toml; do
    check "ships $path" has "$path"
done
subcommands=$("$binary" --help | sed -n '/^SUBCOMMANDS:/,/^$/p' | sed -n 's/^  \([a-z][a-z-]*\) .*/\1/p')
[ -n "$subcommands" ] || fail "no subcommands found in $binary --help"
for subcommand in $subcommands; do
    check "man page for '$package $subcommand'" has "/usr/share/man/man1/$package-$subcommand.1.gz"
done
stray=$(echo "$files" | grep -E '^/(usr/local|etc/systemd|etc/udev|etc/sysctl\.d|etc/modules-load\.d)/|\.example$' || true)
check "nothing under /usr/local or in /etc but the configuration${stray:+ (found: $stray)}" test -z "$stray"
notroot=$(awk '$2 != "root/root"' "$tmp/contents")
check "every file owned by root/root${notroot:+ (not: $notroot)}" test -z "$notroot"

echo "== control (dpkg-deb -I)"
check "conffiles lists exactly /etc/$package/config.toml" \
    test "$(dpkg-deb -I "$deb" conffiles)" = "/etc/$package/config.toml"
depends=$(dpkg-deb -f "$deb" Depends)
echo "      Depends: $depends"
for library in libc6 libvirt0 libudev1 libsystemd0 libstdc++6; do
    check "Depends names $library" sh -c "echo '$depends' | tr , '\\n' | awk '{print \$1}' | grep -qxF '$library'"
done
glibc=$(echo "$depends" | sed -n 's/.*libc6 (>= \([0-9.]*\)).*/\1/p')
check "Depends: libc6 has a version floor (${glibc:-none}; Debian 12 has 2.36, Ubuntu 22.04 2.35)" \
    sh -c "[ -n '$glibc' ] && dpkg --compare-versions '$glibc' le 2.35"
for script in postinst prerm postrm; do
    check "maintainer script $script is executable sh" sh -c "dpkg-deb -I '$deb' $script | sh -n"
done

echo "== the files themselves"
dpkg-deb -x "$deb" "$tmp/x"
bin=$tmp/x/usr/bin/$package
check "binary stripped (no .symtab, no .debug_*)" sh -c "! readelf -S -W '$bin' | grep -qE '\\.symtab|\\.debug_'"
echo "      size: $(stat -c %s "$binary") bytes unstripped, $(stat -c %s "$bin") stripped"
check "stripped binary runs (--help)" "$bin" --help
check "unit starts /usr/bin/$package" grep -qx "ExecStart=/usr/bin/$package run" \
    "$tmp/x/lib/systemd/system/$package.service"
check "bash completion has no #! line" sh -c "! head -1 '$tmp/x/usr/share/bash-completion/completions/$package' | grep -q '^#!'"
conf=$tmp/x/etc/$package/config.toml
check "packaged configuration lends no card" sh -c "! grep -q '^\\[\\[card\\]\\]' '$conf'"
status=0; "$bin" check --config "$conf" >"$tmp/out" 2>&1 || status=$?
check "packaged configuration is valid (check exit $status, 78 = invalid)" test "$status" -ne 78
check "the full example still parses" sh -c "'$bin' check --config '$tmp/x/usr/share/doc/$package/examples/config.toml'; [ \$? -ne 78 ]"

echo "== lintian"
if lintian --fail-on error,warning --display-experimental "$deb" >"$tmp/lintian" 2>&1; then
    pass "lintian: no errors or warnings"
else
    fail "lintian"
fi
grep -v '^running with root' "$tmp/lintian" | sed 's/^/      /' || true

# --- 2. Installing it into Debian 12 --------------------------------------------------------------------
rootfs=${DEB_TEST_ROOTFS:-}
if [ -z "$rootfs" ]; then
    for candidate in "$src"/Tests/EndToEnd/cache/base-bookworm-*/rootfs; do [ -d "$candidate" ] && rootfs=$candidate; done
fi
if [ "$(id -u)" -ne 0 ] || [ -z "$rootfs" ] || [ ! -x "$rootfs/usr/bin/dpkg" ]; then
    echo "SKIP  install into Debian 12: needs root and a rootfs (DEB_TEST_ROOTFS, or make e2e-image's cache)"
else
    echo "== install into a Debian 12 rootfs ($rootfs, read-only)"
    merged=$tmp/merged
    mkdir -p "$tmp/upper" "$tmp/work" "$merged"
    if ! mount -t overlay overlay -o "lowerdir=$rootfs,upperdir=$tmp/upper,workdir=$tmp/work" "$merged" 2>/dev/null; then
        echo "      (no overlayfs here: copying the rootfs)"
        cp -a "$rootfs/." "$merged/"
    fi
    in_root() { chroot "$merged" env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive "$@"; }
    # The same package, one Debian revision later: what an upgrade sees when the conffile did not change.
    upgraded=${version%-*}-$((${version##*-} + 1))
    dpkg-deb -R "$deb" "$tmp/v2"
    sed -i "s/^Version: .*/Version: $upgraded/" "$tmp/v2/DEBIAN/control"
    dpkg-deb --root-owner-group -b "$tmp/v2" "$merged/tmp/v2.deb" >/dev/null
    cp "$deb" "$merged/tmp/v1.deb"
    wants=$merged/etc/systemd/system/multi-user.target.wants/$package.service
    conffile=$merged/etc/$package/config.toml
    message_id=$(sed -n 's/^-- \([0-9a-f]\{32\}\)$/\1/p' "$tmp/x/usr/lib/systemd/catalog/$package.catalog" | head -1)

    check "dpkg -i (dependencies already in Debian 12, no prompt)" in_root dpkg -i /tmp/v1.deb </dev/null
    check "installed version $version" test "$(in_root dpkg-query -W -f='${Version}' $package)" = "$version"
    check "unit enabled (deb-systemd-helper)" test "$(readlink "$wants")" = "/lib/systemd/system/$package.service"
    check "systemctl is-enabled says enabled" test "$(in_root systemctl is-enabled $package.service)" = enabled
    # Swift reads the arguments from /proc/self/cmdline: in a chroot without /proc (an installer's, Ansible's) the
    # CLI must refuse (71), not print its help and exit 0 as if asked nothing.
    without_proc=0
    in_root /usr/bin/$package --help >/dev/null 2>&1 || without_proc=$?
    check "without /proc: refuses with exit 71 (exited $without_proc)" test "$without_proc" = 71
    mount -t proc proc "$merged/proc"
    check "runs with the rootfs' libraries only (no Swift toolchain)" in_root /usr/bin/$package --help
    umount "$merged/proc"
    check "catalog compiled by systemd's trigger ($message_id)" sh -c "chroot '$merged' journalctl --list-catalog | grep -q '$message_id'"

    echo "# edited by test-deb.sh" >>"$conffile"
    check "upgrade to $upgraded (no conffile prompt)" in_root dpkg -i /tmp/v2.deb </dev/null
    check "installed version $upgraded" test "$(in_root dpkg-query -W -f='${Version}' $package)" = "$upgraded"
    check "edited configuration kept" grep -qx "# edited by test-deb.sh" "$conffile"
    check "still enabled after the upgrade" test -L "$wants"
    in_root systemctl disable $package.service >/dev/null 2>&1 || true
    check "reinstall after systemctl disable" in_root dpkg -i /tmp/v2.deb </dev/null
    check "an admin's disable survives the upgrade" test ! -e "$wants"

    check "dpkg -r" in_root dpkg -r $package </dev/null
    check "binary removed" test ! -e "$merged/usr/bin/$package"
    check "configuration kept after remove" grep -qx "# edited by test-deb.sh" "$conffile"
    check "dpkg -P" in_root dpkg -P $package </dev/null
    check "configuration gone after purge" test ! -e "$merged/etc/$package"
    check "deb-systemd-helper state gone after purge" \
        test ! -e "$merged/var/lib/systemd/deb-systemd-helper-enabled/$package.service.dsh-also"

    # An image recipe or Ansible may write the configuration before the package comes: dpkg then asks
    # whose to keep (and fails at end of input); --force-confold keeps the one already there.
    mkdir -p "$merged/etc/$package" && echo "# written before the package" >"$conffile"
    check "dpkg --force-confold -i over a configuration written first" in_root dpkg --force-confold -i /tmp/v1.deb </dev/null
    check "that configuration kept" grep -qx "# written before the package" "$conffile"
    check "and the unit enabled" test -L "$wants"
    in_root dpkg -P $package >/dev/null 2>&1 </dev/null

    # What the maintainer scripts ask of a running systemd and udev (a chroot has neither): stand-ins for
    # systemctl, deb-systemd-invoke and udevadm log each call, /run/systemd/system and /run/udev say "booted".
    mkdir -p "$merged/run/systemd/system" "$merged/run/udev"
    for command in systemctl deb-systemd-invoke udevadm; do
        printf '#!/bin/sh\necho "%s $*" >>/tmp/calls\n' "$command" >"$merged/usr/local/sbin/$command"
        chmod 0755 "$merged/usr/local/sbin/$command"
    done
    calls=$merged/tmp/calls
    called() { grep -qxF "$1" "$calls"; }
    : >"$calls"; in_root dpkg -i /tmp/v1.deb </dev/null >/dev/null 2>&1 || true
    check "install: udev rules reloaded" called "udevadm control --reload"
    check "install: vfio-pci loaded (systemd-modules-load)" called "deb-systemd-invoke restart systemd-modules-load.service"
    check "install: receive-buffer cap applied (systemd-sysctl)" called "deb-systemd-invoke restart systemd-sysctl.service"
    check "install: systemd reloaded" called "systemctl --system daemon-reload"
    check "install: agent started" called "deb-systemd-invoke start $package.service"
    : >"$calls"; in_root dpkg -i /tmp/v2.deb </dev/null >/dev/null 2>&1 || true
    check "upgrade: agent restarted" called "deb-systemd-invoke restart $package.service"
    check "upgrade: agent not stopped first" sh -c "! grep -q 'stop $package' '$calls'"
    : >"$calls"; in_root dpkg -r $package </dev/null >/dev/null 2>&1 || true
    check "remove: agent stopped" called "deb-systemd-invoke stop $package.service"
    check "remove: systemd and udev reloaded" sh -c "grep -qxF 'systemctl --system daemon-reload' '$calls' && grep -qxF 'udevadm control --reload' '$calls'"
fi

echo
if [ "$failures" -eq 0 ]; then echo "test-deb: all passed ($deb)"; exit 0; fi
echo "test-deb: $failures failed"
exit 1
