#!/bin/sh
# The Ansible role (packaging/ansible/roles/passthrough_agent), played with ansible-playbook over a chroot
# connection (community.general.chroot) on a scratch copy of the e2e suite's base rootfs (Debian 12, else 13):
#   - check mode on the bare image changes nothing and says the plan waits for the package;
#   - a run installs the .deb, writes config.toml from the host variables (compared with the file expected,
#     byte for byte), enables the unit, and calls the reload handler; `check` there says "not ready" (exit 1),
#     which validation lets through;
#   - a second run changes nothing (changed=0);
#   - a misspelt card key, and a remote libvirt URI, fail the play at the validation with the agent's own
#     message, and leave the previous file in place;
#   - check mode with another guest shows the diff and the plan (`plan --json` on the candidate file),
#     writes nothing and leaves no scratch file; with a misspelt key it fails (plan exits 78);
#   - a new package version over the rendered file: upgraded, the file kept (no conffile prompt), changed
#     only where it should be.
# The rootfs has no Python (ansible's modules need it, and python3-apt for the apt module): they are
# installed into the copy with apt-get (network), unless the rootfs has them.
#
# Usage: packaging/ansible/test/test-role.sh PACKAGE.deb|RELEASE-BINARY   (make ansible-check)
#   A binary is packaged first (make deb BINARY=…).
#   ROLE_TEST_ROOTFS=DIR  a Debian rootfs (never written: copied); default Tests/EndToEnd/cache/base-bookworm-*/rootfs,
#                         else another suite's base there
# Exit status: 0 all passed or skipped (the reason is printed), 1 something failed, 64 usage.
set -eu

[ $# -eq 1 ] && [ -f "$1" ] || { echo "usage: $0 PACKAGE.deb|RELEASE-BINARY" >&2; exit 64; }
input=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../../.." && pwd)
skip() { echo "SKIP  the Ansible role's test: $*"; exit 0; }

[ "$(id -u)" -eq 0 ] || skip "needs root (chroot)"
command -v ansible-playbook >/dev/null || skip "no ansible-playbook (.ci/install-ansible installs it)"
ansible-doc -t connection -l 2>/dev/null | grep -q '^community\.general\.chroot ' \
    || skip "no community.general.chroot connection plugin (.ci/install-ansible installs it)"
# Debian 12's base first (the package's first target), else another suite's (make e2e-trixie's Debian 13).
rootfs=${ROLE_TEST_ROOTFS:-}
for candidate in "$src"/Tests/EndToEnd/cache/base-bookworm-*/rootfs "$src"/Tests/EndToEnd/cache/base-*/rootfs; do
    [ -z "$rootfs" ] && [ -d "$candidate" ] && rootfs=$candidate
done
[ -n "$rootfs" ] && [ -x "$rootfs/usr/bin/dpkg" ] || skip "no Debian rootfs (ROLE_TEST_ROOTFS, or make e2e-image's cache)"

tmp=$(mktemp -d /tmp/test-role.XXXXXX)
root=$tmp/rootfs
cleanup() {
    for mount in "$root/sys" "$root/proc"; do
        if mountpoint -q "$mount" 2>/dev/null; then umount "$mount"; fi
    done
    rm -rf "$tmp"
}
trap cleanup EXIT INT TERM
failures=0
pass() { echo "ok    $*"; }
fail() { echo "FAIL  $*"; failures=$((failures + 1)); }
check() { # check DESCRIPTION COMMAND...: passes when COMMAND succeeds
    description=$1; shift
    if "$@" >"$tmp/out" 2>&1; then pass "$description"; else fail "$description"; sed 's/^/      /' "$tmp/out"; fi
}
seconds() { awk -v start="$1" -v end="$(date +%s.%N)" 'BEGIN { printf "%.1f s", end - start }'; }

case $input in
*.deb) deb=$input ;;
*)
    echo "== make deb BINARY=$input"
    make -C "$src" --no-print-directory deb BINARY="$input" DEB_OUTDIR="$tmp" | sed 's/^/   /'
    set -- "$tmp"/passthrough-agent_*_"$(dpkg --print-architecture)".deb
    deb=$1
    ;;
esac
[ -f "$deb" ] || { fail "no package"; exit 1; }
version=$(dpkg-deb -f "$deb" Version)
echo "== package $(basename "$deb")"

echo "== scratch copy of $rootfs"
start=$(date +%s.%N)
cp -a "$rootfs" "$root"
echo "      copied in $(seconds "$start")"
# What a booted host has: /proc (without it the binary sees no arguments), /sys read-only (check and plan
# only read it; nothing else in the chroot is meant to touch the machine's devices).
mount -t proc proc "$root/proc"
mount -t sysfs -o ro sysfs "$root/sys"
in_root() { chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive "$@"; }
if [ ! -x "$root/usr/bin/python3" ] || ! in_root python3 -c 'import apt' 2>/dev/null; then
    start=$(date +%s.%N)
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    if in_root apt-get update -qq >"$tmp/apt.log" 2>&1 &&
        in_root apt-get install -y -qq --no-install-recommends python3 python3-apt >>"$tmp/apt.log" 2>&1; then
        echo "      python3 and python3-apt installed into the copy in $(seconds "$start") (the rootfs has no Python)"
    else
        tail -20 "$tmp/apt.log"
        fail "python3 and python3-apt into the copy (apt-get, network)"; exit 1
    fi
fi

# The host variables. [agent] metrics-file only when this binary knows it (the metrics came after the role).
dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp" ./usr/bin/passthrough-agent
printf '[agent]\nmetrics-file = "/var/lib/prometheus/node-exporter/passthrough_agent.prom"\n' >"$tmp/agent.toml"
status=0; "$tmp/usr/bin/passthrough-agent" check --config "$tmp/agent.toml" >/dev/null 2>&1 || status=$?
if [ "$status" -eq 78 ]; then
    echo "      this binary does not know [agent] metrics-file: the role renders no [agent] table"
    metrics=""
else
    metrics=/var/lib/prometheus/node-exporter/passthrough_agent.prom
fi
cat >"$tmp/vars.yml" <<YAML
passthrough_agent_deb: $deb
passthrough_agent_metrics_file: "$metrics"
passthrough_agent_cards:
  - name: fpga0
    address: "0000:01:00"
    ids: ["8086:10d3", "8086:100e"]
    guest: l2
    host-driver: auto
    when-guest-stops: host
    reflash-guard: true
  - name: u250-b
    address: "0000:3b:00.0"
    guest: "fpga dev \"2\""
    link-watch: 1s
    recovery-timeout: 90s
    guest-requests: true
    reset: null
YAML
{
    echo "# Ansible managed: the passthrough_agent role writes this file from host variables, checked with"
    echo "# \`passthrough-agent check\` before it replaces the previous one. See README, \"Configuration\"."
    if [ -n "$metrics" ]; then printf '\n[agent]\nmetrics-file = "%s"\n' "$metrics"; fi
    cat <<'TOML'

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

[[card]]
name = "u250-b"
address = "0000:3b:00.0"
guest = "fpga dev \"2\""
link-watch = "1s"
recovery-timeout = "90s"
guest-requests = true
TOML
} >"$tmp/expected.toml"

printf 'image ansible_connection=community.general.chroot ansible_host=%s ansible_python_interpreter=/usr/bin/python3\n' \
    "$root" >"$tmp/inventory"
run=0
play() { # play ARGS...: ansible-playbook on the image; output in $tmp/play-N.log, its exit status in $played
    run=$((run + 1))
    log=$tmp/play-$run.log
    start=$(date +%s.%N)
    played=0
    ANSIBLE_ROLES_PATH="$src/packaging/ansible/roles" ANSIBLE_NOCOLOR=1 ANSIBLE_LOCAL_TEMP="$tmp/ansible-local" \
        ansible-playbook -i "$tmp/inventory" "$here/site.yml" -e "@$tmp/vars.yml" "$@" >"$log" 2>&1 || played=$?
    echo "== ansible-playbook $* (run $run: exit $played, $(seconds "$start"))"
    sed -n 's/^image *: /      recap: /p' "$log"
}
in_log() { grep -qF -- "$1" "$log"; }
recap() { grep -qE "^image +: .*$1" "$log"; }
show_log() { sed 's/^/      | /' "$log" | tail -40; }
conf=$root/etc/passthrough-agent/config.toml
wants=$root/etc/systemd/system/multi-user.target.wants/passthrough-agent.service

play --check
[ "$played" -eq 0 ] || show_log
check "check mode on the bare image: exit 0" test "$played" -eq 0
check "check mode installed nothing" sh -c "! chroot '$root' dpkg-query -W passthrough-agent"
check "check mode wrote no configuration" test ! -e "$conf"
check "check mode says the plan waits for the package" in_log '"plan": "none: plan exited'

play
[ "$played" -eq 0 ] || show_log
check "first run: exit 0" test "$played" -eq 0
check "package installed ($version)" test "$(in_root dpkg-query -W -f='${Version}' passthrough-agent)" = "$version"
check "config.toml is the host variables, byte for byte" diff -u "$tmp/expected.toml" "$conf"
# /usr/lib on Debian 13 (its /lib is a link to it), /lib on 12.
enabled() { case $(readlink "$wants") in /lib/systemd/system/passthrough-agent.service | /usr/lib/systemd/system/passthrough-agent.service) ;; *) return 1 ;; esac; }
check "the unit is enabled" enabled
check "the reload handler ran" in_log "RUNNING HANDLER [passthrough_agent : Reload passthrough-agent]"
status=0; in_root passthrough-agent check --config /etc/passthrough-agent/config.toml >/dev/null 2>&1 || status=$?
check "check on the image says not ready (exit $status): validation let that through" test "$status" -eq 1

play
check "second run: exit 0, changed=0" recap 'changed=0 .*failed=0 '

cp "$conf" "$tmp/before.toml"
play -e '{"passthrough_agent_cards": [{"name": "fpga0", "adress": "0000:01:00", "guest": "l2"}]}'
check "a misspelt key fails the play" test "$played" -ne 0
check "at the validation, with the agent's message (did you mean)" in_log 'unknown key \"adress\"; did you mean \"address\"?'
check "the previous configuration is still there" cmp "$tmp/before.toml" "$conf"
play -e passthrough_agent_libvirt_uri=qemu+ssh://builder/system
check "a remote libvirt URI fails the play" test "$played" -ne 0
check "at the validation, with the agent's message" in_log 'remote libvirt URI \"qemu+ssh://builder/system\"'
check "the previous configuration is still there" cmp "$tmp/before.toml" "$conf"

scratch_files() { find "$root/tmp" -name 'ansible.*.toml' | wc -l; }
play --check --diff -e '{"passthrough_agent_cards": [{"name": "fpga0", "address": "0000:01:00", "guest": "l3"}]}'
[ "$played" -eq 0 ] || show_log
check "check mode with another guest: exit 0" test "$played" -eq 0
check "the diff shows the change" grep -qx -e '+guest = "l3"' "$log"
check "the plan is reported (plan --json on the candidate file)" in_log '"plan": ['
check "check mode wrote nothing" cmp "$tmp/before.toml" "$conf"
check "and left no scratch file" test "$(scratch_files)" -eq 0
play --check -e '{"passthrough_agent_cards": [{"name": "fpga0", "adress": "0000:01:00", "guest": "l2"}]}'
check "check mode with a misspelt key fails" test "$played" -ne 0
plan_rejected() {
    grep -F '"cmd": ["/usr/bin/passthrough-agent", "plan", "--json"' "$log" | grep -qF '"rc": 78' &&
        in_log 'unknown key \"adress\"; did you mean \"address\"?'
}
check "at the plan (exit 78), with the agent's message" plan_rejected
check "and left no scratch file" test "$(scratch_files)" -eq 0

# A newer package (one Debian revision up) over the rendered file: dpkg keeps it without asking.
upgraded=${version%-*}-$((${version##*-} + 1))
dpkg-deb -R "$deb" "$tmp/v2"
sed -i "s/^Version: .*/Version: $upgraded/" "$tmp/v2/DEBIAN/control"
mkdir "$tmp/v2deb"
dpkg-deb --root-owner-group -b "$tmp/v2" "$tmp/v2deb/$(basename "$deb" | sed "s/_${version}_/_${upgraded}_/")" >/dev/null
sed -i "s|^passthrough_agent_deb: .*|passthrough_agent_deb: $(echo "$tmp"/v2deb/*.deb)|" "$tmp/vars.yml"
play
[ "$played" -eq 0 ] || show_log
check "new package: exit 0" test "$played" -eq 0
check "upgraded to $upgraded" test "$(in_root dpkg-query -W -f='${Version}' passthrough-agent)" = "$upgraded"
check "the rendered configuration kept through the upgrade" diff -u "$tmp/expected.toml" "$conf"
check "only the copy and the install changed (changed=2)" recap 'changed=2 '

echo
if [ "$failures" -eq 0 ]; then echo "test-role: all passed ($run plays)"; exit 0; fi
echo "test-role: $failures failed"
exit 1
