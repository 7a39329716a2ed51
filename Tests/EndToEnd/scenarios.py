#!/usr/bin/env python3
"""End-to-end scenarios for passthrough-agent on a real kernel (L1 in QEMU TCG, L2 nested).

  scenarios.py --tier full     all scenarios, 100 reflash cycles, baseline comparison (make e2e)
  scenarios.py --tier ci       what make test-all (CI) runs: two L2 boots, 5 cycles (make e2e-ci)
  scenarios.py --tier short    the core: reflash, restart, upgrade, baseline (make e2e-short, e2e-trixie)
  scenarios.py --demo          boot, start the guest, reflash twice, stream the agent's journal
  scenarios.py --only baseline,1,2 ...

Each scenario prints PASS/FAIL with its time and, on failure, the reason; exit status 1 if any
failed. Results also go to work/results.json.
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rig import Rig, RigError, log, WORK, HERE  # noqa: E402

BDF = Rig.CARD_BDF
DEV = f"/sys/bus/pci/devices/{BDF}"
STATUS_XML = "/run/libvirt/qemu/l2.xml"
CATALOG = os.path.join(os.environ.get("E2E_AGENT_SRC") or os.path.join(HERE, "..", ".."),
                       "systemd", "passthrough-agent.catalog")
ID_CHANGED = re.compile(r"ID changed", re.I)
VANISHED = re.compile(r"vanish|timed? ?out|did not (come back|return)|not come back|gave up", re.I)
# MESSAGE_IDs (systemd/passthrough-agent.catalog, Sources/PassthroughSystemd/NotificationKind.swift):
# accepted in place of the message texts above.
MID_ID_CHANGED = {"87eaf757a9994e0e9e84852aa2bceaad"}                       # cardIDChanged
MID_BARS_UNASSIGNED = {"43fad8bcf5994be2a93b512f5154976f"}                  # barsUnassigned
MID_VANISHED = {"5b329c87f0e74fd7aa5972e86a441a25",                          # cardVanished
                "34f612af286d42afa749b52c63a45398",                          # cardLost
                "c6b6c5e68c224cbba84baf4bda067ba5"}                          # recoveryGaveUp
# Generous: TCG L1, nested TCG L2.
T_ATTACH, T_L2_BOOT, T_L2_SEES, T_DETACH, T_READY = 150, 900, 120, 120, 120
# The reflash safety scenarios (12–16). The agent waits 20 s for a guest to release a card; the client
# is given 120 s, the harness a little more before it calls an answer missing.
T_REFLASH_CLIENT, T_REFLASH_ANSWER = 120, 150
# "The host is not wedged": reading driver_override, a bus rescan, `passthrough-agent status`.
T_OVERRIDE_READ, T_RESCAN, T_STATUS = 5, 30, 30
L2_XML = "/var/lib/e2e/l2/l2.xml"  # the normal L2 (build-image.sh)
DROPIN = "/run/systemd/system/passthrough-agent.service.d"
DESTROY_L2 = "timeout 60 virsh destroy l2 || kill -9 $(cat /run/libvirt/qemu/l2.pid)"


class Fail(Exception):
    pass


class PortErrors:
    """What the reflash guard masks on the card's root port, read with setpci in L1: SERR# Enable
    (Command bit 8) and Fatal Error Reporting Enable (Device Control bit 2)."""
    SERR, FATAL = 0x100, 0x4

    def __init__(self, command, devctl):
        self.command, self.devctl = command, devctl
        self.serr, self.fatal = bool(command & self.SERR), bool(devctl & self.FATAL)

    @property
    def masked(self):
        return not self.serr and not self.fatal

    def __eq__(self, other):
        return (self.serr, self.fatal) == (other.serr, other.fatal)

    def __str__(self):
        return (f"SERR# {'on' if self.serr else 'off'} (Command {self.command:#06x}), Fatal Error Reporting "
                f"{'on' if self.fatal else 'off'} (Device Control {self.devctl:#06x})")


def check(cond, msg):
    if not cond:
        raise Fail(msg)


class Suite:
    def __init__(self, args):
        self.args = args
        self.rig = Rig(pciehp=args.pciehp)
        self.results = []  # (name, ok, seconds, detail)
        self.not_run = []  # names left out for the time budget
        self.figures = {}
        self.agent_ready = False
        self.agent_why = ""
        self.l1_dead = None
        self.console_mark = 0  # l1_hung reads the console from here (after a wedge a scenario caused and ended)
        self.port = None  # the card's root port, found while the card is on the bus
        self.port_before = None  # its error reporting when the running reflash scenario began

    # ---- helpers ---------------------------------------------------------------------
    def drv_is(self, name):
        return f'[ "$(basename "$(readlink {DEV}/driver 2>/dev/null)" 2>/dev/null)" = {name} ]'

    def attached_cond(self):
        return f'{self.drv_is("vfio-pci")} && grep -q "<hostdev" {STATUS_XML} 2>/dev/null'

    def l2_sees_cond(self, pci_id):
        v, d = pci_id.split(":")
        return f"grep L2-PCI /var/log/l2-console.log | tail -n 1 | grep -q '=0x{v}:0x{d}'"

    def l2_lacks_cond(self, pci_id):
        v, d = pci_id.split(":")
        return f"! grep L2-PCI /var/log/l2-console.log | tail -n 1 | grep -q '=0x{v}:0x{d}'"

    def host_driver_for(self, model):
        return {"e1000e": "e1000e", "e1000": "e1000"}[model]

    def agent_pid(self):
        return self.rig.out("systemctl show -p MainPID --value passthrough-agent")

    def agent_state(self):
        r = self.rig
        active = r.out("systemctl is-active passthrough-agent")
        st = r.out("systemctl show -p Result -p ExecMainStatus -p NRestarts passthrough-agent | tr '\\n' ' '")
        # What the agent itself said last (its stderr/journal lines, not systemd's).
        tail = r.out("journalctl -u passthrough-agent --no-pager -o cat SYSLOG_IDENTIFIER=passthrough-agent "
                     "| tail -n 2 | tr '\\n' '|'")
        return active, f"{active}; {st}; agent said: {tail[:300]}"

    def require_agent(self):
        if not self.agent_ready:
            raise Fail(f"agent not READY: {self.agent_why}")

    def start_guest(self):
        r = self.rig
        r.sh(": > /var/log/l2-console.log")
        t0 = time.monotonic()
        r.sh("virsh start l2", check=True, timeout=180)
        log("L2 started; waiting for it to boot (nested TCG)")
        r.wait_for("L2 boot", "grep -q L2-BOOTED /var/log/l2-console.log", T_L2_BOOT)
        dt = time.monotonic() - t0
        self.figures.setdefault("L2 boot (virsh start → L2 init)", []).append(dt)
        log(f"L2 booted in {dt:.1f}s")
        return dt

    def unplug(self):
        """The first half of a reflash: the card drops off the link (device_del at L0)."""
        r = self.rig
        model = r.card_model
        dt = r.unplug(timeout=T_DETACH)
        r.wait_for("card gone from L1", f"[ ! -e {DEV} ]", 60)
        return dt, model

    def reflash(self, model, attached=True, what="re-attach"):
        """device_del + device_add; returns (seconds device_add→attached, →L2 sees)."""
        r = self.rig
        dt_del, old = self.unplug()
        if attached:
            r.wait_for("hostdev gone from live XML", f"! grep -q '<hostdev' {STATUS_XML}", 60)
        t_add = r.plug(model)
        if not attached:
            return dt_del, None
        try:
            r.wait_for(what, self.attached_cond(), T_ATTACH)
        except RigError as e:
            raise Fail(f"{e}; card driver={r.driver()}, hostdevs={r.hostdev_count()}, guest={r.domstate()}")
        t_att = time.monotonic() - t_add
        r.wait_for("L2 sees the card", self.l2_sees_cond(Rig.MODELS[model]), T_L2_SEES)
        t_l2 = time.monotonic() - t_add
        log(f"reflash {old}→{model}: device_del {dt_del:.1f}s, device_add→attached {t_att:.1f}s, →L2 sees {t_l2:.1f}s")
        return t_att, t_l2

    def run(self, name, fn):
        log(f"=== {name}")
        t0 = time.monotonic()
        if self.l1_dead:
            self.results.append((name, False, 0.0, f"not run: {self.l1_dead}"))
            log(f"FAIL {name}: not run: {self.l1_dead}")
            return
        try:
            detail = fn() or ""
            ok = True
        except Fail as e:
            ok, detail = False, str(e)
        except (RigError, OSError) as e:
            ok, detail = False, f"rig: {e}"
            hung = self.l1_hung()
            if self.rig.proc is None or self.rig.proc.poll() is not None:
                self.l1_dead = "L1's QEMU is gone; see Tests/EndToEnd/work/qemu.log"
                detail = f"{self.l1_dead} (harness: {e})"
            elif hung:
                self.l1_dead = f"L1 kernel stalled ({hung}); see Tests/EndToEnd/work/l1-console.log"
                detail = f"{self.l1_dead} (harness: {e})"
        except Exception as e:  # a harness bug: still report it as this scenario's failure
            ok, detail = False, f"harness: {e!r}"
            traceback.print_exc()
        dt = time.monotonic() - t0
        self.results.append((name, ok, dt, detail))
        log(f"{'PASS' if ok else 'FAIL'} {name} ({dt:.1f}s){': ' + detail if detail else ''}")

    def l1_hung(self):
        """A stalled L1 kernel (seen once under TCG: a vCPU stops taking timer interrupts) is the rig's
        problem, not the agent's: say so instead of blaming the scenario."""
        try:
            with open(os.path.join(WORK, "l1-console.log"), errors="replace") as f:
                f.seek(self.console_mark)
                con = f.read()
        except OSError:
            return None
        for pat in ("rcu_preempt detected stalls", "blocked for more than", "soft lockup", "Kernel panic"):
            if pat in con:
                return pat
        return None

    # ---- scenarios -----------------------------------------------------------------
    def s1_boot_stopped(self):
        r = self.rig
        check(r.domstate() == "shut off", f"guest l2 should be defined and stopped, is '{r.domstate()}'")
        drv = r.driver()
        check(drv == "e1000e", f"card should stay on its host driver e1000e, is on '{drv}'")
        self.require_agent()
        rc, out, err = r.sh("passthrough-agent status")
        row = next((l for l in out.splitlines() if l.startswith("fpga0")), "")
        check(rc == 0 and "e1000e" in row.split(), f"`passthrough-agent status` should show fpga0 on e1000e: rc={rc} {out}{err}")
        # No CAP_NET_ADMIN: the receive buffer comes from the package's sysctl.d drop-in, or a warning says it did not.
        small = [e.get("MESSAGE") for e in r.journal() if "receive buffer" in str(e.get("MESSAGE", ""))]
        check(not small, f"the udev monitor did not get its receive buffer: {small[:1]} "
                         f"(net.core.rmem_max = {r.out('cat /proc/sys/net/core/rmem_max')})")
        # The image was written by the Ansible role (build-image.sh): the agent runs with what it rendered.
        rendered = r.out(f"head -1 {self.CONFIG}")
        check(rendered.startswith("# Ansible managed"), f"{self.CONFIG} was not written by the Ansible role: {rendered!r}")
        version = r.out("dpkg-query -W -f '${Version}' passthrough-agent")
        return (f"card on e1000e; status: {' '.join(row.split())}; udev receive buffer as asked; "
                f"passthrough-agent {version} from its package, config.toml rendered by the Ansible role")

    def s2_guest_starts(self):
        r = self.rig
        if r.domstate() != "running":
            self.start_guest()
        t0 = time.monotonic()
        self.require_agent()
        try:
            r.wait_for("card on vfio-pci and attached", self.attached_cond(), T_ATTACH)
        except RigError as e:
            raise Fail(f"{e}; card driver={r.driver()}, hostdevs={r.hostdev_count()}")
        n = r.hostdev_count()
        check(n == 1, f"live XML should hold 1 hostdev, holds {n}")
        r.wait_for("L2 sees the card", self.l2_sees_cond(Rig.MODELS[r.card_model]), T_L2_SEES)
        return f"attached + L2 sees it {time.monotonic() - t0:.1f}s after L2 booted"

    def s3_reflash_same(self):
        self.ensure_attached()  # also where a --retry-failed run on a fresh L1 starts
        t_att, t_l2 = self.reflash("e1000e")
        self.figures.setdefault("re-attach after reflash (s3/s4/s6)", []).append(t_att)
        return f"device_add→attached {t_att:.1f}s, →L2 sees {t_l2:.1f}s"

    def s4_reflash_new_id(self):
        r = self.rig
        self.ensure_attached()  # also where a --retry-failed run on a fresh L1 starts
        since = int(r.l1_time())
        t_att, t_l2 = self.reflash("e1000")
        check(r.card_id() == "8086:100e", f"card should show 8086:100e, shows {r.card_id()}")
        entries = r.journal(since=since - 1)
        msgs = [e.get("MESSAGE", "") for e in entries]
        by_text = any(ID_CHANGED.search(m) for m in msgs if isinstance(m, str))
        by_id = any(e.get("MESSAGE_ID") in MID_ID_CHANGED for e in entries)
        check(by_text or by_id, f"agent journal has no 'ID changed' message (nor MESSAGE_ID cardIDChanged); "
                                f"its messages: {msgs[-8:]}")
        self.figures.setdefault("re-attach after reflash (s3/s4/s6)", []).append(t_att)
        return f"8086:10d3→8086:100e: device_add→attached {t_att:.1f}s, →L2 sees {t_l2:.1f}s; 'ID changed' logged"

    def s5_guest_stop_start(self):
        r = self.rig
        self.require_agent()
        model = r.card_model
        t0 = time.monotonic()
        r.sh("virsh destroy l2", check=True)
        try:
            r.wait_for("card back on its host driver", self.drv_is(self.host_driver_for(model)), T_ATTACH)
        except RigError as e:
            raise Fail(f"{e}; card driver={r.driver()}")
        t_back = time.monotonic() - t0
        self.start_guest()
        t1 = time.monotonic()
        try:
            r.wait_for("re-attached after guest start", self.attached_cond(), T_ATTACH)
        except RigError as e:
            raise Fail(f"{e}; card driver={r.driver()}, hostdevs={r.hostdev_count()}")
        r.wait_for("L2 sees the card", self.l2_sees_cond(Rig.MODELS[model]), T_L2_SEES)
        return f"destroy→host driver {t_back:.1f}s; L2 booted→attached+seen {time.monotonic() - t1:.1f}s"

    def s6_libvirtd_restart(self):
        r = self.rig
        self.ensure_attached()  # also where a --retry-failed run on a fresh L1 starts
        check(r.hostdev_count() == 1, f"precondition: 1 hostdev attached, found {r.hostdev_count()}")
        r.sh("systemctl restart libvirtd", check=True, timeout=180)
        r.wait_for("libvirtd answers", "virsh domstate l2 >/dev/null 2>&1", 120)
        time.sleep(20)  # give the agent time to reconnect and (wrongly) re-attach
        n = r.hostdev_count()
        check(n == 1, f"after libvirtd restart the live XML holds {n} hostdevs (want 1)")
        t_att, t_l2 = self.reflash("e1000e")
        n = r.hostdev_count()
        check(n == 1, f"after the reflash the live XML holds {n} hostdevs (want 1)")
        self.figures.setdefault("re-attach after reflash (s3/s4/s6)", []).append(t_att)
        return f"1 hostdev after restart; reflash afterwards: device_add→attached {t_att:.1f}s"

    def s7_kill9_mid_rebind(self):
        r = self.rig
        self.ensure_attached()  # also where a --retry-failed run on a fresh L1 starts
        pid0 = self.agent_pid()
        n0 = int(r.out("systemctl show -p NRestarts --value passthrough-agent") or 0)
        self.unplug()
        r.wait_for("hostdev gone from live XML", f"! grep -q '<hostdev' {STATUS_XML}", 60)
        # Kill the agent in the middle of the rebind: as soon as it has written driver_override on the
        # new pci_dev (or 15 s after the card showed up, if it never does).
        kill = (f"end=$(( $(date +%s) + 60 )); until [ -e {DEV} ]; do [ $(date +%s) -ge $end ] && exit 99; sleep 0.02; done; "
                f"end=$(( $(date +%s) + 15 )); until grep -qx vfio-pci {DEV}/driver_override 2>/dev/null; do "
                f"[ $(date +%s) -ge $end ] && break; sleep 0.01; done; "
                f"kill -9 $(systemctl show -p MainPID --value passthrough-agent); "
                f"basename \"$(readlink {DEV}/driver 2>/dev/null)\" 2>/dev/null; cat {DEV}/driver_override")
        pid = r.qga.call("guest-exec", path="/bin/sh", arg=["-c", kill], **{"capture-output": True})["pid"]
        t_add = r.plug("e1000e")
        while True:
            st = r.qga.call("guest-exec-status", pid=pid)
            if st.get("exited"):
                break
            time.sleep(0.05)
        import base64
        at_kill = base64.b64decode(st.get("out-data", "")).decode().split()
        try:
            r.wait_for("agent restarted by systemd", f"[ \"$(systemctl show -p MainPID --value passthrough-agent)\" != {pid0} ] "
                       "&& systemctl is-active -q passthrough-agent", 120)
            r.wait_for("converged (vfio-pci + attached)", self.attached_cond(), T_ATTACH)
        except RigError as e:
            raise Fail(f"{e}; card driver={r.driver()}, hostdevs={r.hostdev_count()}, agent={self.agent_state()[1]}")
        n1 = int(r.out("systemctl show -p NRestarts --value passthrough-agent") or 0)
        check(n1 > n0, f"NRestarts did not grow ({n0}→{n1})")
        check(r.driver() not in ("none", "absent"), "card left without a driver")
        r.wait_for("L2 sees the card", self.l2_sees_cond(Rig.MODELS["e1000e"]), T_L2_SEES)
        return (f"killed with card on '{at_kill[0] if at_kill else '?'}' (override {at_kill[1:] or '-'}); "
                f"restarted + converged {time.monotonic() - t_add:.1f}s after device_add")

    def s11_reflash_prepare_finish(self):
        """The JTAG workflow (README): `reflash --prepare`, program, `reflash --finish`."""
        r = self.rig
        self.require_agent()
        if r.domstate() != "running":
            self.start_guest()
        r.wait_for("card attached", self.attached_cond(), T_ATTACH)
        model = r.card_model
        since = int(r.l1_time())
        rc, out, err = r.sh("passthrough-agent reflash fpga0 --prepare", timeout=120)
        check(rc == 0, f"`reflash fpga0 --prepare` exited {rc}: {(err or out).strip()[:300]}")
        r.wait_for("card off the bus", f"[ ! -e {DEV} ]", 30)
        check(r.hostdev_count() == 0, f"after --prepare the guest still holds {r.hostdev_count()} hostdev(s)")
        time.sleep(5)  # programming the FPGA: nobody may bring the card back meanwhile
        check(r.sh(f"[ ! -e {DEV} ]")[0] == 0, "the card came back before `reflash --finish`")
        t0 = time.monotonic()
        rc, out, err = r.sh("passthrough-agent reflash fpga0 --finish", timeout=200)
        check(rc == 0, f"`reflash fpga0 --finish` exited {rc}: {(err or out).strip()[:300]}")
        try:
            r.wait_for("re-attached after --finish", self.attached_cond(), T_ATTACH)
        except RigError as e:
            raise Fail(f"{e}; card driver={r.driver()}, hostdevs={r.hostdev_count()}")
        t_att = time.monotonic() - t0
        r.wait_for("L2 sees the card", self.l2_sees_cond(Rig.MODELS[model]), T_L2_SEES)
        msgs = [e.get("MESSAGE", "") for e in r.journal(since=since - 1)]
        msgs = [m for m in msgs if isinstance(m, str)]
        masked = any("fatal-error reporting masked" in m for m in msgs)
        restored = any("error reporting restored" in m for m in msgs)
        check(masked and restored, f"reflash guard: masked={masked}, restored={restored}; agent said: {msgs[-6:]}")
        return (f"--prepare: off the bus and out of the guest; --finish → back on vfio-pci and attached "
                f"{t_att:.1f}s later; guard masked and restored on the root port")

    # ---- reflash safety (issue 9): never wedge the host, the held state outlives the process --------
    def ensure_attached(self):
        """Where a reflash scenario starts: L2 running, the card on vfio-pci, attached, and seen by L2."""
        r = self.rig
        self.require_agent()
        if r.domstate() != "running":
            self.start_guest()
        try:
            r.wait_for("card attached", self.attached_cond(), T_ATTACH)
            r.wait_for("L2 sees the card", self.l2_sees_cond(Rig.MODELS[r.card_model]), T_L2_SEES)
        except RigError as e:
            raise Fail(f"precondition: {e}; card driver={r.driver()}, hostdevs={r.hostdev_count()}")

    def root_port(self):
        if self.port is None:
            port = self.rig.out(f'basename "$(dirname "$(readlink -f {DEV})")"')
            check(re.fullmatch(r"[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]", port),
                  f"cannot find the root port above {BDF} (got '{port}')")
            self.port = port
        return self.port

    def port_errors(self):
        regs = self.rig.out(f"setpci -s {self.root_port()} COMMAND CAP_EXP+8.w").split()
        check(len(regs) == 2, f"setpci cannot read root port {self.port}: {regs}")
        return PortErrors(int(regs[0], 16), int(regs[1], 16))

    def unmasked_port(self):
        """Both bits on (as Linux's AER driver leaves a root port), so the guard has something to mask
        and a premature restore shows; remembered as what `--finish` must bring back."""
        e = self.port_errors()
        if not (e.serr and e.fatal):
            log(f"root port {self.port}: {e}; turning both on so the guard has something to mask")
            self.rig.sh(f"setpci -s {self.port} COMMAND=0100:0100 CAP_EXP+8.w=0004:0004", check=True)
            e = self.port_errors()
        self.port_before = e
        return e

    def l2_pci_lines(self):
        """How many times L2 has reported a change of its PCI devices."""
        return int(self.rig.out("grep -c L2-PCI /var/log/l2-console.log || true") or 0)

    def wait_agent_back(self, old_pid):
        try:
            self.rig.wait_for("agent running again", f'[ "$(systemctl show -p MainPID --value passthrough-agent)" != {old_pid} ] '
                              "&& systemctl is-active -q passthrough-agent", T_READY)
        except RigError as e:
            raise Fail(f"{e}; agent={self.agent_state()[1]}")

    def restore_after_reflash(self):
        """Cleanup of a reflash scenario, whatever the agent did: the normal service running, the card
        on the bus, the root port as the scenario found it. Returns what the harness had to do itself."""
        r = self.rig
        did = []
        if r.sh(f"[ -e {DROPIN}/e2e-dry-run.conf ]")[0] == 0:
            r.sh(f"rm -f {DROPIN}/e2e-dry-run.conf && systemctl daemon-reload", check=True)
            r.sh("systemctl reset-failed passthrough-agent; systemctl restart passthrough-agent", timeout=150)
        if r.out("systemctl is-active passthrough-agent") != "active":
            r.sh("systemctl reset-failed passthrough-agent; systemctl start passthrough-agent", timeout=150)
            did.append("agent started again")
        try:
            r.wait_for("agent active", "systemctl is-active -q passthrough-agent", T_READY)
        except RigError as e:
            did.append(f"agent not active: {self.agent_state()[1]}")
        if r.sh(f"[ -e {DEV} ]")[0] != 0:
            rc, out, err = r.sh(f"passthrough-agent reflash fpga0 --finish --timeout {T_REFLASH_CLIENT}",
                                timeout=T_REFLASH_ANSWER + 30)
            if r.sh(f"[ -e {DEV} ]")[0] != 0:
                r.sh("echo 1 > /sys/bus/pci/rescan", timeout=120)
                did.append(f"card rescanned by hand (--finish exited {rc}: {(err or out).strip()[:120]})")
            try:
                r.wait_for("card back with a driver", f"[ -e {DEV}/driver ]", 60)
            except RigError as e:
                did.append(f"card not back: {e}")
        if self.port_before is not None and self.port_errors() != self.port_before:
            b = self.port_before
            r.sh(f"setpci -s {self.port} COMMAND={b.command & b.SERR:04x}:0100 CAP_EXP+8.w={b.devctl & b.FATAL:04x}:0004",
                 check=True)
            did.append(f"root port restored by hand to {b}")
        if did:
            log(f"cleanup: {'; '.join(did)}")
        return did

    def start_guest_without_os(self, tag):
        """`l2` redefined without kernel and initrd and started: SeaBIOS finds nothing to boot and waits
        for ever, so nobody acks an ACPI eject; the agent attaches the card to it as to any guest. L1
        destroys it by itself after a while (a dead-man switch), whatever becomes of the harness."""
        r = self.rig
        if r.domstate() == "running":
            r.sh("virsh destroy l2", check=True)
        r.wait_for("card on its host driver", self.drv_is(self.host_driver_for(r.card_model)), T_ATTACH)
        self.port_before = self.port_errors()
        r.sh(f"mkdir -p /run/e2e; sed -e '/<kernel>/d' -e '/<initrd>/d' -e '/<cmdline>/d' {L2_XML} >/run/e2e/l2-no-os.xml "
             "&& virsh define /run/e2e/l2-no-os.xml >/dev/null && virsh start l2", check=True, timeout=180)
        r.arm_deadman(tag, T_ATTACH + T_REFLASH_ANSWER + T_RESCAN + 60, DESTROY_L2)
        try:
            r.wait_for("card attached to the guest without OS", self.attached_cond(), T_ATTACH)
        except RigError as e:
            raise Fail(f"precondition: {e}; card driver={r.driver()}, hostdevs={r.hostdev_count()}")

    def host_usable(self, tag):
        """Reads driver_override, rescans the bus and asks `passthrough-agent status`, all at once, each
        with its own limit, and looks for tasks in uninterruptible sleep. Returns what is wrong, and a
        line of timings."""
        r = self.rig
        probes = [("override", f"cat {DEV}/driver_override", T_OVERRIDE_READ),
                  ("rescan", "echo 1 > /sys/bus/pci/rescan", T_RESCAN),
                  ("status", "passthrough-agent status", T_STATUS)]
        for name, cmd, _ in probes:
            r.spawn(f"{tag}-{name}", cmd)
        jobs = [(r.collect(f"{tag}-{name}", limit), cmd, limit) for name, cmd, limit in probes]
        problems = [f"`{cmd}` did not return within {limit}s" for job, cmd, limit in jobs
                    if not (job.done and job.seconds <= limit)]
        stuck = r.stuck_tasks()
        if stuck:
            problems.append(f"tasks in uninterruptible sleep: {stuck}")
        return problems, (f"driver_override {jobs[0][0].seconds:.1f}s, rescan {jobs[1][0].seconds:.1f}s, "
                          f"status {jobs[2][0].seconds:.1f}s")

    def destroy_guest_without_os(self, tag):
        """Destroys the guest (L1's dead-man switch does it if the harness cannot) and waits for the PCI
        layer to answer again; returns the seconds that took."""
        r = self.rig
        t0 = time.monotonic()
        try:
            r.sh(f"{DESTROY_L2}; true", timeout=120)
            r.disarm_deadman(tag)
        except RigError as e:
            log(f"cannot destroy l2 ({e}); waiting for L1's dead-man switch to do it")
            r.qga.wait_ready(T_ATTACH + T_REFLASH_ANSWER + T_RESCAN + 120)
        after = r.run_bounded(f"{tag}-after", f"cat {DEV}/driver_override 2>/dev/null; echo 1 > /sys/bus/pci/rescan", 60)
        if not after.done:
            self.l1_dead = f"L1's PCI layer still blocked 60 s after the guest without OS was destroyed ({r.stuck_tasks()})"
        return time.monotonic() - t0

    def restore_normal_guest(self):
        r = self.rig
        r.sh(f"virsh define {L2_XML} >/dev/null", check=True)
        self.restore_after_reflash()
        # Hung-task reports of a wedge a scenario caused and ended are explained; the stall detector
        # looks past them.
        self.console_mark = os.path.getsize(os.path.join(WORK, "l1-console.log"))

    def s12_prepare_guest_without_os(self):
        """`reflash --prepare` while a guest that cannot let go holds the card (no OS: nobody acks the
        ACPI eject). It must be refused, and the host's PCI layer must stay usable: removing a function
        QEMU still holds blocks the kernel (device lock, pci_rescan_remove_lock) until the guest dies."""
        r = self.rig
        self.require_agent()
        problems, wedged = [], False
        try:
            self.start_guest_without_os("s12")
            r.spawn("s12-prepare", f"passthrough-agent reflash fpga0 --prepare --timeout {T_REFLASH_CLIENT}")
            while True:
                prep = r.collect("s12-prepare", 3)
                if prep.done or prep.seconds > T_REFLASH_ANSWER:
                    break
                if prep.seconds > 30:
                    # Past the agent's 20 s detach wait: a removal the guest blocks shows already; no
                    # need to wait out the client's timeout in a wedged host.
                    early = r.run_bounded("s12-early", f"cat {DEV}/driver_override", T_OVERRIDE_READ)
                    if not early.done:
                        wedged = True
                        problems.append(f"host wedged {prep.seconds:.0f}s into --prepare, no answer yet: reading "
                                        f"driver_override did not return within {T_OVERRIDE_READ}s")
                        break
            blocked, timings = self.host_usable("s12")
            wedged = wedged or bool(blocked)
            in_guest = r.sh(f"grep -q '<hostdev' {STATUS_XML}")[0] == 0
            if not prep.done:
                if not wedged:
                    problems.append(f"--prepare did not answer within {prep.seconds:.0f}s")
            elif prep.rc != 77:
                problems.append(f"--prepare exited {prep.rc} after {prep.seconds:.1f}s (want 77, refused): {prep.out[:200]}")
            elif not re.search(r"\bl2\b", prep.out):
                problems.append(f"the refusal does not name the guest l2: {prep.out[:200]}")
            problems += blocked
            if not in_guest:
                problems.append("the card is no longer in l2's live XML")
            if prep.done:
                self.figures["--prepare refused, guest without OS (s12)"] = [prep.seconds]
        finally:
            dt = self.destroy_guest_without_os("s12")
            if wedged and not self.l1_dead:
                problems.append(f"host usable again {dt:.1f}s after `virsh destroy l2`")
                late = r.collect("s12-prepare", 0)
                if late.done and not prep.done:
                    problems.append(f"then --prepare exited {late.rc}: {late.out[:120]}")
            self.restore_normal_guest()
        check(not problems, "; ".join(problems))
        return f"refused (77) {prep.seconds:.1f}s after --prepare, naming l2; {timings}; the card still in l2"

    def s17_aer_while_attached(self):
        """A fatal AER error while the card is in a guest: QEMU's vfio error notifier pauses the guest and
        the kernel's own recovery resets the link (and, on QEMU's root port, fails). The paused guest
        holds the card: the agent must not wedge the host on it, must say what happened, and must bring
        the card back once the guest is gone (once, the reset had cleared its BARs and e1000e's probe
        failed: "given back to no driver"; a remove and rescan fixes that).
        QEMU's e1000e has read-only error-reporting enables, so the error is reported by the root port
        above it; the kernel recovers everything below the port, the card included."""
        r = self.rig
        self.require_agent()
        problems, destroyed = [], False
        try:
            self.start_guest_without_os("s17")
            model, pid0, since = r.card_model, self.agent_pid(), int(r.l1_time())
            said = r.inject_aer("rp1", "MALF_TLP")
            check(said.startswith("OK"), f"precondition: pcie_aer_inject_error: {said}")
            try:
                r.wait_for("QEMU pauses l2 (vfio error notifier)", "virsh domstate l2 | grep -q paused", 60)
            except RigError as e:
                raise Fail(f"precondition: {e}; the error did not reach vfio: {r.out('dmesg | grep -i aer | tail -n 3')}")
            time.sleep(15)  # the kernel's recovery, the agent's 5 s grace probe, whatever it then does
            blocked, timings = self.host_usable("s17")
            problems += blocked
            if r.sh(f"grep -q '<hostdev' {STATUS_XML}")[0] != 0:
                problems.append("the card left the paused guest's live XML")
            entries = [e for e in r.journal(since=since - 1) if e.get("PASSTHROUGH_CARD") == "fpga0"]
            told = [e for e in entries if e.get("MESSAGE_ID") in self.catalog_ids() and int(e.get("PRIORITY", 6)) <= 4]
            if not told:
                problems.append(f"no notification (catalog MESSAGE_ID, warning or worse) for fpga0; it said: "
                                f"{[e.get('MESSAGE') for e in entries][-3:]}")
            destroyed = True
            self.destroy_guest_without_os("s17")
            t0 = time.monotonic()
            try:
                r.wait_for("card back on its host driver after the guest was destroyed",
                           self.drv_is(self.host_driver_for(model)), T_ATTACH)
                t_back = time.monotonic() - t0
                self.figures["card on its host driver after AER + guest destroyed (s17)"] = [t_back]
            except RigError as e:
                problems.append(f"not converged after `virsh destroy l2`: {e}; card driver={r.driver()}; the agent said: "
                                f"{[e.get('MESSAGE') for e in r.journal(since=since - 1)][-2:]}")
            if self.agent_pid() != pid0:
                problems.append(f"the agent restarted (pid {pid0} → {self.agent_pid()})")
        finally:
            if not destroyed:
                self.destroy_guest_without_os("s17")
            if r.driver() == "none":
                r.sh(f"echo 1 > {DEV}/remove; echo 1 > /sys/bus/pci/rescan", timeout=120)
                log("cleanup: driverless card removed and rescanned by hand")
            self.restore_normal_guest()
        check(not problems, "; ".join(problems))
        return (f"l2 paused by QEMU, card kept in it; {timings}; notified; card on "
                f"{self.host_driver_for(model)} {t_back:.1f}s after `virsh destroy l2`")

    def catalog_ids(self):
        return set(re.findall(r"^-- ([0-9a-f]{32})", open(CATALOG).read(), re.M))

    def prepare_gap_finish(self, gap, what):
        """`--prepare`, then `gap` (the agent killed, restarted, stopped and started), then `--finish`:
        the held card and the guard outlive the process. Returns seconds from --finish to attached."""
        r = self.rig
        self.ensure_attached()
        before = self.unmasked_port()
        model = r.card_model
        rc, out, err = r.sh(f"passthrough-agent reflash fpga0 --prepare --timeout {T_REFLASH_CLIENT}", timeout=T_REFLASH_ANSWER)
        check(rc == 0, f"precondition: `reflash fpga0 --prepare` exited {rc}: {(err or out).strip()[:300]}")
        problems = []
        try:
            r.wait_for("card off the bus", f"[ ! -e {DEV} ]", 30)
            held = self.port_errors()
            check(held.masked, f"precondition: after --prepare the root port should be masked, is {held}")
            problems += gap() or []
            time.sleep(5)  # what a restarted agent does by itself, it has done by now
            after = self.port_errors()
            if not after.masked:
                problems.append(f"guard released after {what} with the card still off the bus ({after})")
            if r.sh(f"[ -e {DEV} ]")[0] == 0:
                problems.append(f"the card came back after {what}, before --finish")
            t0 = time.monotonic()
            rc, out, err = r.sh(f"passthrough-agent reflash fpga0 --finish --timeout {T_REFLASH_CLIENT}", timeout=T_REFLASH_ANSWER)
            t_att = None
            if rc != 0:
                problems.append(f"--finish after {what} exited {rc}: {(err or out).strip()[:200]}")
            else:
                try:
                    r.wait_for("re-attached after --finish", self.attached_cond(), T_ATTACH)
                    t_att = time.monotonic() - t0
                    r.wait_for("L2 sees the card", self.l2_sees_cond(Rig.MODELS[model]), T_L2_SEES)
                except RigError as e:
                    problems.append(f"not back in l2 after --finish: {e}; card driver={r.driver()}, hostdevs={r.hostdev_count()}")
                restored = self.port_errors()
                if restored != before:
                    problems.append(f"root port not restored by --finish: {restored} (before --prepare: {before})")
        finally:
            self.restore_after_reflash()
        check(not problems, "; ".join(problems))
        return t_att

    def kill9_agent(self):
        pid = self.agent_pid()
        self.rig.sh(f"kill -9 {pid}", check=True)
        self.wait_agent_back(pid)

    def restart_agent(self):
        pid = self.agent_pid()
        self.rig.sh("systemctl restart passthrough-agent", check=True, timeout=150)
        self.wait_agent_back(pid)

    def stop_start_agent(self):
        r = self.rig
        pid = self.agent_pid()
        r.sh("systemctl stop passthrough-agent", check=True, timeout=150)
        problems = []
        stopped = self.port_errors()
        if not stopped.masked:
            problems.append(f"`systemctl stop` released the guard with the card off the bus ({stopped})")
        if r.sh("[ -d /run/passthrough-agent ]")[0] != 0:
            problems.append("`systemctl stop` removed /run/passthrough-agent (the held state with it)")
        r.sh("systemctl start passthrough-agent", check=True, timeout=150)
        self.wait_agent_back(pid)
        return problems

    def s13_kill9_while_held(self):
        t_att = self.prepare_gap_finish(self.kill9_agent, "kill -9")
        self.figures.setdefault("--finish after the agent was killed/restarted → attached (s13/s14)", []).append(t_att)
        return f"guard held and card off the bus after kill -9 and systemd's restart; --finish → attached {t_att:.1f}s, port restored"

    def s14_restart_while_held(self):
        done, failed = [], []
        for what, gap in (("systemctl restart", self.restart_agent), ("systemctl stop + start", self.stop_start_agent)):
            try:
                t_att = self.prepare_gap_finish(gap, what)
                self.figures.setdefault("--finish after the agent was killed/restarted → attached (s13/s14)", []).append(t_att)
                done.append(f"{what}: guard held, --finish → attached {t_att:.1f}s")
            except Fail as e:
                failed.append(f"{what}: {e}")
        check(not failed, " | ".join(failed))
        return "; ".join(done) + "; port restored"

    def s15_finish_without_prepare(self):
        """`--finish` on a card a guest is using: refused; no reset, no re-enumeration, the guest keeps it."""
        r = self.rig
        self.ensure_attached()
        card_regs = lambda: r.out(f"setpci -s {BDF} COMMAND BASE_ADDRESS_0").split()
        regs0, lines0 = card_regs(), self.l2_pci_lines()
        r.spawn("s15-uevents", "exec udevadm monitor --kernel --subsystem-match=pci")
        try:
            time.sleep(1)
            t0 = time.monotonic()
            rc, out, err = r.sh(f"passthrough-agent reflash fpga0 --finish --timeout {T_REFLASH_CLIENT}", timeout=T_REFLASH_ANSWER)
            dt = time.monotonic() - t0
            time.sleep(5)  # a detach, reset or re-enumeration would show by now
        finally:
            r.kill_job("s15-uevents")
        uevents = [l.split()[1] for l in r.collect("s15-uevents", 5).out.splitlines() if BDF in l]
        problems = []
        if rc != 77:
            problems.append(f"--finish without --prepare exited {rc} (want 77, refused): {(err or out).strip()[:200]}")
        if r.sh(self.attached_cond())[0] != 0:
            problems.append(f"the card left l2: driver={r.driver()}, hostdevs={r.hostdev_count()}")
        if r.sh(self.l2_sees_cond(Rig.MODELS[r.card_model]))[0] != 0 or self.l2_pci_lines() != lines0:
            problems.append(f"L2 saw its PCI devices change ({lines0} → {self.l2_pci_lines()} reports)")
        if uevents:
            problems.append(f"kernel uevents for the card: {', '.join(uevents[:6])}")
        regs1 = card_regs()
        if regs1 != regs0:
            problems.append(f"the card's Command/BAR0 changed {regs0} → {regs1} (reset)")
        if problems:
            self.restore_after_reflash()
        check(not problems, "; ".join(problems))
        self.figures["--finish without --prepare refused (s15)"] = [dt]
        return f"refused (77) in {dt:.1f}s; still attached, L2 saw no change, no uevent, Command/BAR0 unchanged"

    def s16_dry_run_refuses(self):
        """`run --dry-run` changes nothing, a reflash request included: refused, nothing moved."""
        r = self.rig
        self.ensure_attached()
        port0, lines0 = self.port_errors(), self.l2_pci_lines()
        pid = self.agent_pid()
        r.sh(f"mkdir -p {DROPIN} && printf '[Service]\\nExecStart=\\nExecStart=/usr/bin/passthrough-agent run --dry-run\\n' "
             f">{DROPIN}/e2e-dry-run.conf && systemctl daemon-reload && systemctl restart passthrough-agent",
             check=True, timeout=150)
        problems = []
        try:
            self.wait_agent_back(pid)
            cmdline = r.out("tr '\\0' ' ' </proc/$(systemctl show -p MainPID --value passthrough-agent)/cmdline")
            check("--dry-run" in cmdline, f"precondition: the agent runs `{cmdline}`, not `run --dry-run`")
            t0 = time.monotonic()
            rc, out, err = r.sh(f"passthrough-agent reflash fpga0 --prepare --timeout {T_REFLASH_CLIENT}", timeout=T_REFLASH_ANSWER)
            dt = time.monotonic() - t0
            time.sleep(3)
            if rc != 77:
                problems.append(f"--prepare to a dry-run agent exited {rc} (want 77, refused): {(err or out).strip()[:200]}")
            if r.sh(f"[ -e {DEV} ]")[0] != 0:
                problems.append("the card was taken off the bus")
            elif r.sh(self.attached_cond())[0] != 0:
                problems.append(f"the card left l2: driver={r.driver()}, hostdevs={r.hostdev_count()}")
            if self.l2_pci_lines() != lines0:
                problems.append(f"L2 saw its PCI devices change ({lines0} → {self.l2_pci_lines()} reports)")
            port1 = self.port_errors()
            if port1 != port0:
                problems.append(f"root port changed: {port0} → {port1}")
        finally:
            self.port_before = port0
            self.restore_after_reflash()
        check(not problems, "; ".join(problems))
        self.figures["--prepare to run --dry-run refused (s16)"] = [dt]
        return f"refused (77) in {dt:.1f}s; card still on vfio-pci in l2, port untouched"

    # ---- the reconcile loop under real faults (issue 10) ------------------------------------------
    CONFIG = "/etc/passthrough-agent/config.toml"

    def set_host_driver(self, driver):
        """Rewrites the card's `host-driver` and reloads the agent (SIGHUP), as a user would."""
        r = self.rig
        r.sh(f"sed -i 's/^host-driver = .*/host-driver = \"{driver}\"/' {self.CONFIG} && "
             f"grep -qx 'host-driver = \"{driver}\"' {self.CONFIG} && systemctl reload passthrough-agent", check=True)
        time.sleep(2)  # ExecReload= only sends the signal

    def watch_card(self, tag):
        """Starts two L1 jobs: the kernel's uevents for the card, and its driver sampled every 0.2 s."""
        r = self.rig
        r.spawn(f"{tag}-uevents", "exec udevadm monitor --kernel --subsystem-match=pci")
        r.spawn(f"{tag}-driver", f"while :; do if [ -e {DEV}/driver ]; then echo bound; else echo none; fi; sleep 0.2; done")
        time.sleep(1)

    def watched(self, tag):
        """Ends the jobs of `watch_card`: (unbind uevents of the card, longest driverless run in seconds)."""
        r = self.rig
        for job in ("uevents", "driver"):
            r.kill_job(f"{tag}-{job}")
        actions = [l.split()[1] for l in r.collect(f"{tag}-uevents", 5).out.splitlines() if BDF in l and len(l.split()) > 1]
        longest = run = 0
        for sample in r.collect(f"{tag}-driver", 5).out.split():
            run = run + 1 if sample == "none" else 0
            longest = max(longest, run)
        return actions.count("unbind"), longest * 0.2

    def guest_stopped(self):
        """Where the scenarios from "stopped" start: l2 not running, the card on its host driver (returned)."""
        r = self.rig
        self.require_agent()
        if r.domstate() == "running":
            r.sh("virsh destroy l2", check=True)
        host = self.host_driver_for(r.card_model)
        r.wait_for("card on its host driver", self.drv_is(host), T_ATTACH)
        return host

    def s18_host_driver_refuses(self):
        """`host-driver` names a driver that refuses the card (pcieport takes only ports): when the guest
        stops, each try to give the card back fails and is rolled back to vfio-pci, at the backoff's pace,
        not at the pace of the uevents the tries make; fixed and reloaded, the card goes back."""
        r = self.rig
        self.ensure_attached()
        model, since = r.card_model, int(r.l1_time())
        observe = 60
        problems = []
        try:
            self.set_host_driver("pcieport")
            self.watch_card("s18")
            r.sh("virsh destroy l2", check=True)
            time.sleep(observe)
            unbinds, driverless = self.watched("s18")
            final = r.driver()
            if unbinds > 10:
                problems.append(f"{unbinds} unbinds in {observe} s (want at most 10: backoff 0.5 s doubling to 30 s)")
            if unbinds == 0:
                problems.append("the agent never tried the configured host driver")
            if driverless >= 1.0:
                problems.append(f"the card was without a driver for {driverless:.1f} s in a row")
            if final != "vfio-pci":
                problems.append(f"after {observe} s the card is on '{final}' (want vfio-pci, where each failed try rolls back to)")
            said = [e.get("MESSAGE", "") for e in r.journal(since=since - 1) if e.get("PASSTHROUGH_CARD") == "fpga0"
                    and int(e.get("PRIORITY", 6)) <= 4]
            if not any("pcieport" in m for m in said if isinstance(m, str)):
                problems.append(f"no warning naming pcieport for fpga0; it said: {said[-3:]}")
        finally:
            self.set_host_driver("auto")
        t0 = time.monotonic()
        try:
            r.wait_for("card back on its host driver after the fix was reloaded", self.drv_is(self.host_driver_for(model)), T_ATTACH)
            self.figures["reload with the fix → host driver (s18)"] = [time.monotonic() - t0]
        except RigError as e:
            problems.append(f"{e}; card driver={r.driver()}")
        check(not problems, "; ".join(problems))
        return (f"{unbinds} unbinds in {observe} s, never driverless ≥ 1 s, on vfio-pci between tries; "
                f"fixed + reload → {self.host_driver_for(model)} {time.monotonic() - t0:.1f}s")

    def s20_started_with_card_driverless(self):
        """The daemon stopped, the card left driverless (a kill -9 mid give-back leaves it so), once with
        `driver_override=vfio-pci` behind: started with the guest stopped, it gives the card to the kernel's
        choice of host driver, the override cleared."""
        r = self.rig
        host = self.guest_stopped()
        done, problems = [], []
        for override in ("", "vfio-pci"):
            what = f"driverless, override {override or '(none)'}"
            pid = self.agent_pid()
            r.sh("systemctl stop passthrough-agent", check=True, timeout=150)
            r.sh(f"echo {override or chr(39) + chr(39)} > {DEV}/driver_override; echo {BDF} > {DEV}/driver/unbind", check=True)
            check(r.driver() == "none", f"precondition ({what}): the card is on '{r.driver()}'")
            time.sleep(2)  # nothing else gives it a driver
            check(r.driver() == "none", f"precondition ({what}): something else bound '{r.driver()}'")
            t0 = time.monotonic()
            r.sh("systemctl start passthrough-agent", check=True, timeout=150)
            self.wait_agent_back(pid)
            try:
                r.wait_for(f"card on {host} ({what})", self.drv_is(host), T_ATTACH)
                dt = time.monotonic() - t0
                left = r.out(f"cat {DEV}/driver_override")
                if left != "(null)":
                    problems.append(f"{what}: on {host}, but driver_override still says '{left}'")
                self.figures.setdefault("agent started, card driverless → host driver (s20)", []).append(dt)
                done.append(f"{what}: {host} {dt:.1f}s after start")
            except RigError as e:
                problems.append(f"{what}: {e}; card driver={r.driver()}, override={r.out(f'cat {DEV}/driver_override')}")
                r.sh(f"echo > {DEV}/driver_override; echo {BDF} > /sys/bus/pci/drivers_probe")
        check(not problems, "; ".join(problems))
        return "; ".join(done) + "; override cleared"

    def s19_vfio_pci_not_loadable(self):
        """vfio-pci unloaded and blocked from loading while the guest starts: the agent cannot bind it, so
        it leaves the card on its host driver (nothing unbound), retries with backoff, and says why; once
        the module is loaded, the next try binds and attaches."""
        r = self.rig
        host = self.guest_stopped()
        blocker = "/etc/modprobe.d/e2e-no-vfio-pci.conf"
        problems = []
        try:
            r.sh(f"printf 'install vfio-pci /bin/false\\ninstall vfio_pci /bin/false\\n' >{blocker} && rmmod vfio_pci", check=True)
            check(r.sh("[ ! -e /sys/bus/pci/drivers/vfio-pci ] && ! modprobe vfio-pci 2>/dev/null")[0] == 0,
                  "precondition: vfio-pci is still loaded, or loads despite the blocker")
            since = int(r.l1_time())
            self.watch_card("s19")
            t_start = time.monotonic()
            self.start_guest()  # the agent tries while L2 boots (about a minute)
            blocked_for = time.monotonic() - t_start
            unbinds, driverless = self.watched("s19")
            if unbinds:
                problems.append(f"the card was unbound {unbinds} times although vfio-pci is not there to take it")
            if r.driver() != host:
                problems.append(f"with vfio-pci missing the card is on '{r.driver()}' (want {host})")
            said = [e.get("MESSAGE", "") for e in r.journal(since=since - 1) if e.get("PASSTHROUGH_CARD") == "fpga0"]
            tries = [m for m in said if isinstance(m, str) and "vfio-pci" in m and "not loaded" in m]
            if not tries:
                problems.append(f"nothing said that vfio-pci is not loaded; it said: {said[-3:]}")
            # Backoff 0.5 s doubling to 30 s: six tries in the first 31.5 s, then one every 30 s (L2's boot
            # takes one minute on a quiet machine, ten on a loaded one); two more for slack.
            allowed = 6 + int(max(0.0, blocked_for - 31.5) // 30) + 1 + 2
            if len(tries) > allowed:
                problems.append(f"{len(tries)} failed tries in {blocked_for:.0f} s (backoff 0.5 s doubling to 30 s allows {allowed})")
        finally:
            r.sh(f"rm -f {blocker}")
        rc, out, err = r.sh("modprobe vfio-pci")
        check(rc == 0, f"`modprobe vfio-pci` exited {rc}: {(err or out).strip()[:200]}")
        t0 = time.monotonic()
        try:
            r.wait_for("card on vfio-pci after modprobe", self.drv_is("vfio-pci"), 30 + 15)
            t_bound = time.monotonic() - t0
            r.wait_for("card attached", self.attached_cond(), T_ATTACH)
            t_att = time.monotonic() - t0
            self.figures["modprobe vfio-pci → attached (s19)"] = [t_att]
            r.wait_for("L2 sees the card", self.l2_sees_cond(Rig.MODELS[r.card_model]), T_L2_SEES)
        except RigError as e:
            problems.append(f"not attached after `modprobe vfio-pci` (the backoff's cap is 30 s): {e}; card driver={r.driver()}, "
                            f"hostdevs={r.hostdev_count()}")
        check(not problems, "; ".join(problems))
        return (f"{len(tries)} tries in {blocked_for:.0f} s, nothing unbound, the card on {host}; "
                f"modprobe → vfio-pci {t_bound:.1f}s, attached {t_att:.1f}s")

    # ---- guest requests (issue 12): the colleague reprograms the FPGA from inside the guest -------
    def l2_requests(self, console="/var/log/l2-console.log"):
        """The guest's `L2-REQ` lines: {request: [(answer, seconds from sending to the answer)]}."""
        sent, answers = {}, {}
        for line in self.rig.out(f"grep -a L2-REQ {console} || true").splitlines():
            m = re.match(r"L2-REQ > (.*) uptime=([0-9.]+)$", line)
            if m:
                sent[m.group(1)] = float(m.group(2))
                continue
            m = re.match(r"L2-REQ (.*) -> (.*) uptime=([0-9.]+)$", line)
            if m:
                answers.setdefault(m.group(1), []).append((m.group(2), float(m.group(3)) - sent.get(m.group(1), float(m.group(3)))))
        return answers

    def wait_request(self, request, n=1, console="/var/log/l2-console.log", timeout=T_L2_BOOT):
        """Waits for the guest's n-th answer to `request`; returns (answer, seconds as the guest saw them)."""
        try:
            self.rig.wait_for(f"the guest's answer #{n} to `{request}`",
                              f"[ $(grep -ac 'L2-REQ {request} -> ' {console}) -ge {n} ]", timeout)
        except RigError as e:
            tail = self.rig.out(f"grep -a L2-REQ {console} | tail -n 3")
            # Whether the guest is alive at all: its PCI report loop prints a line whenever what it sees changes.
            last = self.rig.out(f"tail -c 600 {console}")
            raise Fail(f"{e}; the guest's last request lines: {tail!r}; the console's last bytes: {last!r}")
        return self.l2_requests(console)[request][n - 1]

    def wait_card_seen(self, n, device="0x10d3", console="/var/log/l2-console.log"):
        """The guest's own script saw the card for the n-th time (its `card` step; the PCI report loop of
        a slow nested guest may lag far behind)."""
        try:
            self.rig.wait_for(f"L2 sees the card ({device}), #{n}",
                              f"[ $(grep -a 'L2-REQ card seen' {console} | grep -c {device}) -ge {n} ]", T_ATTACH)
        except RigError as e:
            raise Fail(f"{e}; the guest's last request lines: {self.rig.out(f'grep -a L2-REQ {console} | tail -n 3')!r}")

    def s21_guest_requests(self):
        """`guest-requests = true`: the guest asks for its own card over the virtio-serial port the agent
        hot-adds. `prepare` → off the bus; `finish` → back and attached; `prepare` then a reflash at L0 with
        a new ID → the card's return finishes it; a malformed line and an unknown card get an error line; a
        second guest (l2b, booted alongside) asking for fpga0 gets `unknown-card` and the card moves only for l2."""
        r = self.rig
        self.guest_stopped()
        steps = ("card:send=version:send=hello+world:send=prepare+nosuch:send=prepare+fpga0:sleep=10:"
                 "send=finish+fpga0:card:sleep=3:send=prepare+fpga0:card:send=status")
        since = int(r.l1_time())
        problems, done = [], []
        try:
            # fpga0 takes its guest's requests; fpga1, a card lent to l2b that is not plugged in, makes the
            # agent listen to l2b too.
            r.sh(f"mkdir -p /run/e2e && cp {self.CONFIG} /run/e2e/config.before && sed -i '/^reflash-guard/a guest-requests = true' {self.CONFIG} && "
                 f"printf '\\n[[card]]\\nname = \"fpga1\"\\naddress = \"0000:02:00\"\\nguest = \"l2b\"\\nguest-requests = true\\n' "
                 f">>{self.CONFIG} && systemctl reload passthrough-agent", check=True)
            time.sleep(2)
            rejected = [e.get("MESSAGE") for e in r.journal(since=since - 1) if "rejected" in str(e.get("MESSAGE", ""))]
            check(not rejected, f"precondition: the agent rejected the configuration: {rejected[:1]}")
            # QEMU runs as libvirt-qemu here, as on a stock Debian host (the rig's qemu.conf says root): libvirt
            # then hands the request socket to that user, and the agent needs CAP_DAC_OVERRIDE to connect. (A
            # per-domain DAC <seclabel> is not enough: libvirt makes the domain's private directory root's.)
            r.sh("cp /etc/libvirt/qemu.conf /run/e2e/qemu.conf.before && sed -i -e 's/^user = \"root\"/user = \"libvirt-qemu\"/' "
                 "-e 's/^group = \"root\"/group = \"libvirt-qemu\"/' /etc/libvirt/qemu.conf && systemctl restart libvirtd",
                 check=True, timeout=180)
            serial = '<controller type="virtio-serial" index="0"/>'
            r.sh(f"mkdir -p /run/e2e && sed -e 's|</devices>|{serial}</devices>|' "
                 f"-e 's|</cmdline>| e2e.requests={steps}</cmdline>|' {L2_XML} >/run/e2e/l2-requests.xml && "
                 "virsh define /run/e2e/l2-requests.xml >/dev/null", check=True)
            # A second guest, l2b, boots alongside (two nested boots in parallel cost one) and asks for fpga0.
            r.sh(": > /var/log/l2b-console.log; sed -e 's|<name>l2</name>|<name>l2b</name>|' -e '/<uuid>/d' "
                 "-e 's|l2-console.log|l2b-console.log|' -e 's|e2e.requests=[^<]*|e2e.requests=send=prepare+fpga0:send=status|' "
                 "/run/e2e/l2-requests.xml >/run/e2e/l2b.xml && virsh define /run/e2e/l2b.xml >/dev/null && virsh start l2b",
                 check=True, timeout=180)
            self.start_guest()
            r.wait_for("card attached", self.attached_cond(), T_ATTACH)
            answer, _ = self.wait_request("version")
            if answer != "ok passthrough-agent guest-protocol 1":
                problems.append(f"`version` → {answer!r}")
            # The point of running QEMU as libvirt-qemu: the socket the agent answered on is not root's.
            socket = r.out("virsh dumpxml l2 | grep -B2 org.passthrough-agent.0 | grep -o \"path='[^']*'\" | head -n1 | cut -d\\' -f2")
            owner = r.out(f"stat -c '%U %a' {socket}") if socket else ""
            if not owner.startswith("libvirt-qemu "):
                problems.append(f"precondition: the request socket {socket!r} is owned by {owner!r}, not libvirt-qemu")
            else:
                done.append(f"QEMU as libvirt-qemu (socket {owner.split()[0]}, mode {owner.split()[1]})")
            for request, code in (("hello world", "error bad-request"), ("prepare nosuch", "error unknown-card")):
                answer, _ = self.wait_request(request)
                if not answer.startswith(code):
                    problems.append(f"`{request}` → {answer!r} (want {code} …)")
            answer, t_prep = self.wait_request("prepare fpga0")
            if not answer.startswith("ok"):
                raise Fail(f"`prepare fpga0` from l2 → {answer!r}")
            off = r.sh(f"[ ! -e {DEV} ]")[0] == 0 and r.hostdev_count() == 0
            if not off:
                problems.append(f"after `prepare` the card is still on the bus or in l2 (driver={r.driver()}, hostdevs={r.hostdev_count()})")
            self.figures["guest request: prepare → answered, as L2 sees it (s21)"] = [t_prep]
            answer, t_fin = self.wait_request("finish fpga0")
            if not answer.startswith("ok"):
                raise Fail(f"`finish fpga0` from l2 → {answer!r}")
            r.wait_for("re-attached after finish", self.attached_cond(), T_ATTACH)
            self.wait_card_seen(2)
            self.figures["guest request: finish → answered, as L2 sees it (s21)"] = [t_fin]
            done.append(f"prepare answered in {t_prep:.1f}s (card off the bus), finish in {t_fin:.1f}s, attached")

            # Second round: the card comes back by itself (a reflash at L0 with a new ID); no `finish`.
            answer, _ = self.wait_request("prepare fpga0", n=2)
            if not answer.startswith("ok"):
                raise Fail(f"second `prepare fpga0` from l2 → {answer!r}")
            r.wait_for("card off the bus", f"[ ! -e {DEV} ]", 30)
            r.unplug(timeout=T_DETACH)
            t_add = r.plug("e1000")
            try:
                r.wait_for("re-attached after the card came back by itself", self.attached_cond(), T_ATTACH)
                t_back = time.monotonic() - t_add
                self.wait_card_seen(1, "0x100e")
                done.append(f"prepare + reflash at L0 (new ID) → attached {t_back:.1f}s after device_add, no finish")
            except RigError as e:
                problems.append(f"{e}; card driver={r.driver()}, hostdevs={r.hostdev_count()}")
            answer, _ = self.wait_request("status")
            if "fpga0=attached" not in answer.split() or "fpga1" in answer:
                problems.append(f"`status` → {answer!r} (want fpga0=attached, and nothing of fpga1)")

            # The second guest (booted alongside l2) asked for a card that is not its own, whenever its boot
            # ended: it is refused, and the card moved only for l2's own two `prepare`s (told by the journal,
            # so the answer may come while l2's requests move the card).
            answer, _ = self.wait_request("prepare fpga0", console="/var/log/l2b-console.log")
            if not answer.startswith("error unknown-card"):
                problems.append(f"l2b's `prepare fpga0` → {answer!r} (want error unknown-card)")
            messages = [str(e.get("MESSAGE", "")) for e in r.journal(since=since - 1)]
            asked = [m for m in messages if " asks: " in m]
            takeoffs = sum(1 for m in messages if "taken off the bus for a reflash" in m)
            if any(not m.startswith("guest l2 asks: ") for m in asked) or takeoffs != 2:
                problems.append(f"the card moved for someone else than l2: requests acted on {asked}, {takeoffs} take-offs (want l2's 2)")
            if r.sh(self.attached_cond())[0] != 0 or r.hostdev_count() != 1:
                problems.append(f"at the end the card is not in l2: driver={r.driver()}, hostdevs={r.hostdev_count()}")
            guests = {e.get("GUEST") for e in r.journal(since=since - 1) if int(e.get("PRIORITY", 6)) <= 4}
            if "l2b" not in guests:
                problems.append("l2b's refused request is not in the journal with GUEST=l2b at warning or worse")
            done.append(f"l2b asking for fpga0: {answer.split(' ', 2)[:2]}, nothing moved")
        finally:
            r.sh("virsh destroy l2b >/dev/null 2>&1; virsh undefine l2b >/dev/null 2>&1; "
                 f"cp /run/e2e/config.before {self.CONFIG} && systemctl reload passthrough-agent; "
                 "[ -e /run/e2e/qemu.conf.before ] && cp /run/e2e/qemu.conf.before /etc/libvirt/qemu.conf && "
                 "rm /run/e2e/qemu.conf.before && systemctl restart libvirtd; "
                 f"virsh define {L2_XML} >/dev/null; true", timeout=180)
        check(not problems, "; ".join(problems))
        return "; ".join(done)

    # ---- guard modes (issue 11): the documented bits, read back with setpci ---------------------
    def set_guard(self, mode):
        """Rewrites fpga0's `reflash-guard` (a TOML value) and reloads the agent (SIGHUP)."""
        r = self.rig
        r.sh(f"sed -i 's/^reflash-guard = .*/reflash-guard = {mode}/' {self.CONFIG} && "
             f"grep -qx 'reflash-guard = {mode}' {self.CONFIG} && systemctl reload passthrough-agent", check=True)
        time.sleep(2)  # ExecReload= only sends the signal

    def link_control(self):
        regs = self.rig.out(f"setpci -s {self.root_port()} CAP_EXP+10.w").split()
        check(len(regs) == 1, f"setpci cannot read Link Control of root port {self.port}: {regs}")
        return int(regs[0], 16)

    def masked_cond(self):
        """Shell: both guarded bits off on the root port (for wait_for)."""
        port = self.root_port()
        return (f"[ $(( 0x$(setpci -s {port} COMMAND) & 0x100 )) -eq 0 ] && "
                f"[ $(( 0x$(setpci -s {port} CAP_EXP+8.w) & 0x4 )) -eq 0 ]")

    def s22_guard_modes(self):
        """`link-disable` sets exactly Link Disable on the root port between --prepare and --finish and
        clears it (on a port that hard-wires the bit to zero, as QEMU's do, --prepare is refused with the
        card back in l2 and the port unchanged); `while-lent` masks exactly SERR# Enable and Fatal Error Reporting Enable while the card
        is in l2, keeps them masked across `systemctl restart passthrough-agent` (the originals still on
        disk), and restores them when l2 stops."""
        r = self.rig
        problems, done = [], []
        r.sh(f"mkdir -p /run/e2e && cp {self.CONFIG} /run/e2e/config.guard-before", check=True)
        try:
            # link-disable: Link Control bit 4 while held, nothing else; cleared by --finish before the rescan.
            self.set_guard('"link-disable"')
            self.ensure_attached()
            before = self.unmasked_port()
            link_before = self.link_control()
            rc, out, err = r.sh(f"passthrough-agent reflash fpga0 --prepare --timeout {T_REFLASH_CLIENT}", timeout=T_REFLASH_ANSWER)
            if rc != 0 and "ignores writes to" in err + out:
                # QEMU's root ports hard-wire Link Disable to zero (pcie_cap_lnkctl_init makes only CCC and ES
                # writable): the agent must see that the bit did not stick, bring the card back and say so.
                try:
                    r.wait_for("back in l2 after the refused --prepare", self.attached_cond(), T_ATTACH)
                except RigError as e:
                    raise Fail(f"link-disable refused: {e}; card driver={r.driver()}, hostdevs={r.hostdev_count()}")
                if self.link_control() != link_before or self.port_errors() != before:
                    problems.append(f"link-disable refused, but the port changed: Link Control {self.link_control():#06x}, {self.port_errors()}")
                if "fpga0: fpga0" in err + out:
                    problems.append(f"the refusal names the card twice: {(err or out).strip()[:160]!r}")
                done.append(f"link-disable: this port does not implement Link Disable; --prepare refused (exit {rc}: "
                            f"{(err or out).strip()[:160]!r}), card back in l2, port unchanged")
            else:
                check(rc == 0, f"link-disable: `reflash fpga0 --prepare` exited {rc}: {(err or out).strip()[:300]}")
                r.wait_for("card off the bus", f"[ ! -e {DEV} ]", 30)
                held_link, held_errors = self.link_control(), self.port_errors()
                if held_link != link_before | 0x10:
                    problems.append(f"link-disable: Link Control {held_link:#06x} while held (before {link_before:#06x}, want bit 4 set and nothing else)")
                if held_errors != before:
                    problems.append(f"link-disable: error reporting changed while held: {held_errors} (before {before})")
                time.sleep(3)
                if r.sh(f"[ -e {DEV} ]")[0] == 0:
                    problems.append("link-disable: the card came back with its link disabled")
                rc, out, err = r.sh(f"passthrough-agent reflash fpga0 --finish --timeout {T_REFLASH_CLIENT}", timeout=T_REFLASH_ANSWER)
                check(rc == 0, f"link-disable: `reflash fpga0 --finish` exited {rc}: {(err or out).strip()[:300]}")
                try:
                    r.wait_for("re-attached after --finish", self.attached_cond(), T_ATTACH)
                except RigError as e:
                    raise Fail(f"link-disable: {e}; card driver={r.driver()}, hostdevs={r.hostdev_count()}")
                if self.link_control() != link_before:
                    problems.append(f"link-disable: Link Control {self.link_control():#06x} after --finish (before {link_before:#06x})")
                done.append(f"link-disable: Link Control {link_before:#06x} → {held_link:#06x} while held → {self.link_control():#06x}")

            # while-lent: masked while in l2, across a restart of the agent, restored when l2 stops.
            self.ensure_attached()
            before = self.unmasked_port()
            self.set_guard('"while-lent"')
            try:
                r.wait_for("masked while lent", self.masked_cond(), 60)
            except RigError as e:
                raise Fail(f"while-lent: {e}; root port {self.port_errors()}")
            lent = self.port_errors()
            if (lent.command, lent.devctl) != (before.command & ~PortErrors.SERR, before.devctl & ~PortErrors.FATAL):
                problems.append(f"while-lent: more than the two bits changed: {lent} (before {before})")
            record = r.out("cat /run/passthrough-agent/cards/fpga0")
            saved = re.search(r"^guard-command=0x([0-9a-f]{4})$", record, re.M)
            if "guard=while-lent" not in record or not saved or int(saved.group(1), 16) != before.command:
                problems.append(f"while-lent: the state file does not hold the original registers: {record!r}")
            self.restart_agent()
            time.sleep(5)  # the restarted agent's first passes are done by now
            restarted = self.port_errors()
            if not restarted.masked:
                problems.append(f"while-lent: released by `systemctl restart` while lent ({restarted})")
            if r.out("cat /run/passthrough-agent/cards/fpga0") != record:
                problems.append(f"while-lent: the state file changed across the restart: {r.out('cat /run/passthrough-agent/cards/fpga0')!r}")
            r.sh("virsh destroy l2", check=True)
            try:
                r.wait_for("card home", self.drv_is(self.host_driver_for(r.card_model)), T_ATTACH)
                r.wait_for("port restored", f"! {{ {self.masked_cond()}; }} && [ ! -e /run/passthrough-agent/cards/fpga0 ]", 60)
            except RigError as e:
                problems.append(f"while-lent: after l2 stopped: {e}; root port {self.port_errors()}")
            home = self.port_errors()
            if (home.command, home.devctl) != (before.command, before.devctl):
                problems.append(f"while-lent: root port after l2 stopped: {home} (before {before})")
            done.append(f"while-lent: {before} → masked while lent, still after a restart → {home} once l2 stopped")
        finally:
            r.sh(f"cp /run/e2e/config.guard-before {self.CONFIG} && systemctl reload passthrough-agent; true")
            time.sleep(2)
            self.restore_after_reflash()
        check(not problems, "; ".join(problems))
        return "; ".join(done)

    # ---- a bigger bitstream (issue 11): check's facts, a BAR that grows past its port's window ----------
    def check_report(self):
        """`passthrough-agent check --json` in L1, as {item name: item}; and its text form."""
        r = self.rig
        rc, out, err = r.sh("passthrough-agent check --json", timeout=120)
        check(rc in (0, 1), f"`check --json` exited {rc}: {(err or out).strip()[:300]}")
        try:
            items = {i["name"]: i for i in json.loads(out)["items"]}
        except (ValueError, KeyError, TypeError) as e:
            raise Fail(f"`check --json` printed no report ({e}): {out[:300]!r}")
        return items, r.out("passthrough-agent check 2>&1; true")

    def check_facts_as_they_are(self, items):
        """The root port's facts in `check --json` against what config space and sysfs say, read here with
        setpci and ls: the hotplug driver, who handles AER, Data Link Layer Link Active reporting, the windows."""
        r, port = self.rig, self.root_port()
        problems = []
        path = items.get("card fpga0 reflash path", {}).get("detail", "")
        services = r.out(f"for d in /sys/bus/pci/devices/{port}/{port}:pcie*; do "
                         "[ -e $d/driver ] && basename $(readlink -f $d/driver); done; true").split()
        slot = r.sh("grep -lx 0000:01:00 /sys/bus/pci/slots/*/address")[0] == 0
        driver = "pciehp" if "pciehp" in services else "acpiphp" if slot else None
        if driver and f"hotplug slot at port {port} ({driver})" not in path:
            problems.append(f"reflash path {path!r}, but {port} has {'pciehp' if driver == 'pciehp' else 'an acpiphp slot'}")
        aer = "aer" in services
        if ("OS-first" in path) != aer:
            problems.append(f"reflash path {path!r}, but the aer service is {'bound' if aer else 'not bound'} on {port}")
        dllla = int(r.out(f"setpci -s {port} CAP_EXP+0c.l"), 16) >> 20 & 1
        link = items.get("card fpga0 link state", {})
        if (link.get("status") == "ok") != bool(dllla):
            problems.append(f"link state {link!r}, but Link Capabilities of {port} say DLLLA reporting {bool(dllla)}")
        pref = r.out(f"sed -n 16p /sys/bus/pci/devices/{port}/resource").split()
        size = int(pref[1], 16) - int(pref[0], 16) + 1 if len(pref) == 3 and int(pref[1], 16) else 0
        windows = items.get("card fpga0 windows", {}).get("detail", "")
        if size and "prefetchable window" in windows and f"{size >> 20} MiB" not in windows:
            problems.append(f"windows {windows!r}, but {port}'s prefetchable window is {size >> 20} MiB")
        return problems, f"path: {path}; DLLLA reporting {bool(dllla)}; prefetchable window {size >> 20} MiB"

    def card_bar2(self):
        """(start, size) of the card's BAR2 from its `resource` file; start 0 = not placed."""
        line = self.rig.out(f"sed -n 3p {DEV}/resource").split()
        if len(line) != 3:
            return None
        start, end = int(line[0], 16), int(line[1], 16)
        return start, (end - start + 1) if end else 0

    def bitstream(self, size, backend):
        """A reflash to an ivshmem-plain whose BAR2 has `size` bytes, from whatever is on rp1 now."""
        r = self.rig
        self.unplug()
        r.wait_for("hostdev gone from live XML", f"! grep -q '<hostdev' {STATUS_XML}", 60)
        for old in self.backends:
            r.qmp.command("object-del", id=old)
        self.backends = [backend]
        return r.plug_ivshmem(size, backend)

    def s23_bigger_bitstream(self):
        """`check --json` reports the root port's hotplug/AER/DLLLA facts and windows as setpci and sysfs
        read them. Then three bitstreams (ivshmem-plain, BAR2 = its memory backend) on the root port whose
        prefetchable window the firmware sized at 2 MiB: 1 MiB fits and is attached; 256 MiB does not fit the
        window on the ACPI hot-add ("can't assign; no space"), the agent removes the card and its port and
        rescans the root bus, the kernel sizes the window anew, the card is attached with BAR2 placed; 64 GiB
        fits no window of this host bridge (32 GiB above 4 GiB): not bound to vfio-pci, not attached, one
        error notification naming the fix, shown by `status`. Back to the e1000e: attached again."""
        r = self.rig
        problems, done = [], []
        self.backends = []
        r.sh(f"mkdir -p /run/e2e && cp {self.CONFIG} /run/e2e/config.bar-before && "
             f"sed -i 's/^ids = \\[\\(.*\\)\\]$/ids = [\\1, \\\"1af4:1110\\\"]/' {self.CONFIG} && "
             f"grep -q 1af4:1110 {self.CONFIG} && systemctl reload passthrough-agent", check=True)
        time.sleep(2)
        try:
            self.ensure_attached()
            items, text = self.check_report()
            facts_problems, facts = self.check_facts_as_they_are(items)
            problems += facts_problems
            log("check on the test host:\n" + text)
            done.append(f"check --json: {facts}")

            # 1 MiB: inside the firmware's window.
            t_add = self.bitstream(1 << 20, "bar1m")
            try:
                r.wait_for("the 1 MiB bitstream attached", self.attached_cond(), T_ATTACH)
            except RigError as e:
                raise Fail(f"1 MiB: {e}; driver={r.driver()}, hostdevs={r.hostdev_count()}, BAR2={self.card_bar2()}")
            bar = self.card_bar2()
            if not bar or not bar[0] or bar[1] != 1 << 20:
                problems.append(f"1 MiB: BAR2 {bar}")
            done.append(f"1 MiB: attached {time.monotonic() - t_add:.1f} s after device_add, BAR2 at {bar[0]:#x}")

            # 256 MiB: the hot-add cannot place it; the agent's rescan from the root bus can.
            cursor = r.out("journalctl -n 0 --show-cursor --no-pager | sed -n 's/^-- cursor: //p'")
            t_add = self.bitstream(256 << 20, "bar256m")
            try:
                r.wait_for("the 256 MiB bitstream attached", self.attached_cond(), T_ATTACH + 60)
            except RigError as e:
                raise Fail(f"256 MiB: {e}; driver={r.driver()}, hostdevs={r.hostdev_count()}, BAR2={self.card_bar2()}; "
                           f"agent said: {r.out(f'journalctl --after-cursor={cursor!r} -u passthrough-agent -o cat --no-pager | tail -5')!r}")
            t_att = time.monotonic() - t_add
            bar = self.card_bar2()
            kernel = r.out(f"journalctl -k --after-cursor='{cursor}' --no-pager -o cat | grep -c \"BAR 2 .*can't assign\" || true")
            agent = r.out(f"journalctl --after-cursor='{cursor}' -u passthrough-agent --no-pager -o cat | grep -m1 'rescanning above' || true")
            if not bar or not bar[0] or bar[1] != 256 << 20:
                problems.append(f"256 MiB: attached with BAR2 {bar}")
            if not agent:
                problems.append(f"256 MiB: attached without the agent's rescan from above the port (kernel: {kernel} failed placements)")
            if bar:
                done.append(f"256 MiB: kernel could not place BAR2 on hot-add ({kernel}×), agent rescanned above "
                            f"{self.root_port()}, attached {t_att:.1f} s after device_add with BAR2 at {bar[0]:#x}")
            self.figures.setdefault("bigger bitstream: device_add → attached via a rescan above the port (s23)", []).append(t_att)
            items, _ = self.check_report()
            facts_problems, facts = self.check_facts_as_they_are(items)
            problems += [f"after the rescan: {p}" for p in facts_problems]

            # 64 GiB: no window of this host bridge holds it.
            since = r.l1_time()
            self.bitstream(64 << 30, "bar64g")
            told = lambda: [e.get("MESSAGE", "") for e in r.journal(since=since) if e.get("MESSAGE_ID") in MID_BARS_UNASSIGNED]
            deadline = time.monotonic() + T_ATTACH + 60
            while not told() and time.monotonic() < deadline:
                time.sleep(3)
            if not told():
                raise Fail(f"64 GiB: no BARs-unassigned notification in {T_ATTACH + 60} s; driver={r.driver()}, hostdevs={r.hostdev_count()}, "
                           f"BAR2={self.card_bar2()}; agent said: {[e.get('MESSAGE') for e in r.journal(since=since)][-5:]!r}")
            time.sleep(5)  # a later pass must not bind or attach it either, nor say it again
            messages = told()
            message = messages[0]
            if len(messages) != 1:
                problems.append(f"64 GiB: notified {len(messages)} times: {messages!r}")
            if "pci=realloc" not in message and "above 4g" not in message.lower():
                problems.append(f"64 GiB: the notification names no fix: {message!r}")
            if r.driver() == "vfio-pci" or r.hostdev_count() != 0:
                problems.append(f"64 GiB: driver={r.driver()}, hostdevs={r.hostdev_count()} (want neither vfio-pci nor attached)")
            status = r.out("passthrough-agent status 2>&1; true")
            if "unassigned" not in status.lower():
                problems.append(f"64 GiB: `status` does not show it: {status[-300:]!r}")
            done.append(f"64 GiB: not bound, not attached, notified once: {message[:200]!r}")
        finally:
            # Back to the normal card and configuration, whatever happened.
            try:
                if r.card_model is not None:
                    self.unplug()
                for old in self.backends:
                    r.qmp.command("object-del", id=old)
                self.backends = []
                r.plug("e1000e")
            except RigError as e:
                problems.append(f"cleanup: {e}")
            r.sh(f"cp /run/e2e/config.bar-before {self.CONFIG} && systemctl reload passthrough-agent; true")
        try:
            r.wait_for("the e1000e attached again", self.attached_cond(), T_ATTACH + 60)
        except RigError as e:
            problems.append(f"back to the e1000e: {e}; driver={r.driver()}, hostdevs={r.hostdev_count()}")
        check(not problems, "; ".join(problems))
        return "; ".join(d for d in done if d)

    # ---- metrics (issue 13): node_exporter's textfile, as Prometheus would read it ---------------------
    def s25_metrics(self):
        """After the reflashes of 3 and 4 with l2 running: the textfile the agent keeps passes `promtool check
        metrics` (on L0, when it has promtool) and says what a user would check: fpga0 attached to a running l2,
        its current ID, unannounced reflashes counted and re-attach times observed, libvirt connected; and it is
        rewritten at least every 30 s while nothing happens."""
        r = self.rig
        self.ensure_attached()
        path = "/var/lib/prometheus/node-exporter/passthrough_agent.prom"
        text = r.out(f"cat {path}")
        check(text, f"no metrics file at {path}: {r.out(f'ls -la {os.path.dirname(path)}')!r}")
        problems = []
        if shutil.which("promtool"):
            lint = subprocess.run(["promtool", "check", "metrics"], input=text + "\n", capture_output=True, text=True)
            if lint.returncode != 0:
                problems.append(f"promtool check metrics: {(lint.stdout + lint.stderr).strip()[:300]}")
            linted = "promtool check metrics passes"
        else:
            linted = "promtool not on L0: not linted"
        samples = {}
        for line in text.splitlines():
            m = re.match(r"^([a-z_]+)(\{[^}]*\})? (\S+)$", line)
            if m:
                samples[m.group(1) + (m.group(2) or "")] = float(m.group(3))
        model_id = Rig.MODELS[r.card_model]
        want = {
            'passthrough_agent_card_placement{card="fpga0",placement="attached"}': lambda v: v == 1,
            'passthrough_agent_card_attached{card="fpga0"}': lambda v: v == 1,
            'passthrough_agent_card_guest_running{card="fpga0"}': lambda v: v == 1,
            'passthrough_agent_libvirt_connected': lambda v: v == 1,
            'passthrough_agent_reattach_duration_seconds_count{card="fpga0"}': lambda v: v >= 1,
        }
        for key, ok in want.items():
            if key not in samples or not ok(samples[key]):
                problems.append(f"{key} = {samples.get(key)}")
        info = [k for k in samples if k.startswith("passthrough_agent_card_info{") and f'id="{model_id}"' in k and 'guest="l2"' in k]
        if not info:
            problems.append(f"no passthrough_agent_card_info with id={model_id} and guest=l2")
        unannounced = sum(v for k, v in samples.items() if k.startswith("passthrough_agent_reflashes_total{") and 'kind="unannounced"' in k)
        if unannounced < 1:
            problems.append(f"no unannounced reflash counted (3 and 4 made {unannounced:.0f})")
        mtime = lambda: float(r.out(f"stat -c %Y {path}"))
        before = mtime()
        time.sleep(35)
        if mtime() <= before:
            problems.append("not rewritten within 35 s while nothing happened (a staleness alert would fire)")
        mode = r.out(f"stat -c %a {path}")
        if mode != "644":
            problems.append(f"mode {mode}: node_exporter (not root) cannot read it")
        check(not problems, "; ".join(problems))
        reattached = samples['passthrough_agent_reattach_duration_seconds_count{card="fpga0"}']
        return (f"{linted}; attached, guest running, id {model_id}, {unannounced:.0f} unannounced reflashes, "
                f"{reattached:.0f} re-attach times, libvirt connected; rewritten within 35 s; mode 644")

    # ---- the Debian package (issue 13): an upgrade in place while a card is lent ---------------------
    def s24_package_upgrade(self):
        """The image runs the agent installed from its .deb (build-image.sh: make deb, dpkg -i). `dpkg -i` of
        the next Debian revision while the card is in l2: the daemon is restarted by the postinst and comes
        back READY, the configuration the admin edited is kept byte for byte (a conffile), and the card never
        leaves l2 (its hostdev is in the live XML at every look during the upgrade, L2's PCI list unchanged)."""
        r = self.rig
        self.ensure_attached()
        version = r.out("dpkg-query -W -f '${Version}' passthrough-agent")
        deb = r.out("ls /var/lib/e2e/upgrade/*.deb")
        check(version and deb.endswith(".deb"), f"no installed package ({version!r}) or no upgrade package ({deb!r})")
        config_before = r.out(f"sha256sum < {self.CONFIG}")
        # The image was made as an admin would: config.toml written, then the package installed, so dpkg already
        # put the packaged one beside it then (config.toml.dpkg-dist). The upgrade must add nothing.
        beside = lambda: r.out("ls /etc/passthrough-agent/ | grep -e dpkg- -e ucf || true").split()
        beside_before = beside()
        check("name = \"fpga0\"" in r.out(f"cat {self.CONFIG}"), "the image's configuration does not lend fpga0")
        pid, lines = self.agent_pid(), self.l2_pci_lines()
        cursor = r.out("journalctl -n 0 --show-cursor --no-pager | sed -n 's/^-- cursor: //p'")
        # A look at l2's live XML every half second, in L1, for as long as the upgrade runs.
        r.sh("rm -f /run/e2e/hostdev-looks; mkdir -p /run/e2e; (while [ ! -e /run/e2e/upgrade-done ]; do "
             f"grep -c '<hostdev' {STATUS_XML} >> /run/e2e/hostdev-looks; sleep 0.5; done) "
             ">/dev/null 2>&1 </dev/null & echo started", check=True)
        t0 = time.monotonic()
        rc, out, err = r.sh(f"dpkg -i {deb} </dev/null", timeout=300)
        upgrade_seconds = time.monotonic() - t0
        check(rc == 0, f"`dpkg -i {deb}` exited {rc}: {(err or out).strip()[-400:]}")
        self.wait_agent_back(pid)
        self.wait_agent_ready()
        time.sleep(3)  # the restarted agent's first passes
        r.sh("touch /run/e2e/upgrade-done; sleep 1")
        looks = [int(x) for x in r.out("cat /run/e2e/hostdev-looks").split() if x.isdigit()]
        problems = []
        upgraded = r.out("dpkg-query -W -f '${Version}' passthrough-agent")
        if upgraded == version:
            problems.append(f"still version {version} after the upgrade")
        if r.out(f"sha256sum < {self.CONFIG}") != config_before:
            problems.append(f"the upgrade changed {self.CONFIG}")
        leftovers = sorted(set(beside()) - set(beside_before))
        if leftovers:
            problems.append(f"the upgrade left {leftovers!r} beside the configuration")
        if not looks or min(looks) < 1:
            problems.append(f"the card left l2's live XML during the upgrade ({looks.count(0)} of {len(looks)} looks without it)")
        if r.hostdev_count() != 1 or r.driver() != "vfio-pci":
            problems.append(f"after the upgrade: hostdevs={r.hostdev_count()}, driver={r.driver()}")
        if self.l2_pci_lines() != lines:
            problems.append("L2 saw its PCI devices change during the upgrade")
        errors = r.out(f"journalctl --after-cursor='{cursor}' -u passthrough-agent -p err --no-pager -o cat | grep -v '^-- ' || true")
        if errors:
            problems.append(f"errors in the journal during the upgrade: {errors[:300]!r}")
        moved = r.out(f"journalctl --after-cursor='{cursor}' -u passthrough-agent --no-pager -o cat "
                      "| grep -i -e detach -e unbind -e 'taken off' || true")
        if moved:
            problems.append(f"the agent moved the card during the upgrade: {moved[:300]!r}")
        check(not problems, "; ".join(problems))
        self.figures.setdefault("package upgrade (dpkg -i → agent READY again), card lent", []).append(upgrade_seconds)
        return (f"{version} → {upgraded} by dpkg -i in {upgrade_seconds:.1f} s; agent restarted (pid {pid} → "
                f"{self.agent_pid()}) and READY; configuration kept; hostdev in the live XML at all {len(looks)} looks")

    def proc_figures(self):
        """(pid, VmRSS KiB, open fds, threads, RssAnon KiB) of the agent."""
        pid = self.agent_pid()
        st = dict(l.split(":", 1) for l in self.rig.out(f"cat /proc/{pid}/status").splitlines() if ":" in l)
        kib = lambda k: int((st.get(k) or "0").split()[0])
        fds = self.rig.out(f"ls /proc/{pid}/fd | wc -l")
        return pid, kib("VmRSS"), int(fds or 0), kib("Threads"), kib("RssAnon")

    def s8_cycles(self):
        r = self.rig
        self.ensure_attached()  # also where a --retry-failed run on a fresh L1 starts
        n = self.args.cycles
        lat, lat_l2, samples = [], [], []
        pid0, rss0, fd0, thr0, _ = self.proc_figures()
        for i in range(n):
            t_att, t_l2 = self.reflash("e1000e")
            lat.append(t_att)
            lat_l2.append(t_l2)
            samples.append(self.proc_figures())
            _, rss, fds, threads, anon = samples[-1]
            log(f"cycle {i + 1}/{n}: attached {t_att:.1f}s, L2 sees {t_l2:.1f}s, RSS {rss} KiB (anon {anon}), fds {fds}, threads {threads}")
        self.figures["agent re-attach (s8 cycles)"] = lat
        self.figures["agent re-attach → L2 sees (s8 cycles)"] = lat_l2
        pids = {s[0] for s in samples} | {pid0}
        check(len(pids) == 1, f"the agent restarted during the cycles (pids {sorted(pids)})")
        # Growth after warm-up (cycle 1), not against the idle process before the first cycle.
        # Files and threads: a look may land while the agent has a file open for a moment (a sysfs read,
        # the metrics file's temporary): the first cycles' least counts are the warm ones, and a last look
        # that differs is taken again two seconds later (what leaks is still there).
        _, rss_w, _, _, anon_w = samples[0]
        fd_w, thr_w = min(s[2] for s in samples[:3]), min(s[3] for s in samples[:3])
        _, rss_e, fd_e, thr_e, anon_e = samples[-1]
        if (fd_e, thr_e) != (fd_w, thr_w):
            time.sleep(2)
            _, rss_e, fd_e, thr_e, anon_e = self.proc_figures()
        thr_max = max(s[3] for s in samples)
        anon = [s[4] for s in samples[:-1]] + [anon_e]
        # Anonymous memory may step up once after cycle 1: a path a reflash takes for the first time (a slower
        # attach, an error's text) makes the Swift runtime cache type metadata for good, and malloc keeps the
        # high-water mark (seen: +116 KiB at cycle 4, +228 KiB at cycle 2, flat after). A leak steps again and
        # again: a second step of more than one malloc trim (64 KiB), or more than 512 KiB in all, fails.
        steps = [(i + 1, b - a) for i, (a, b) in enumerate(zip(anon, anon[1:])) if b - a > 64]
        growth = (f"RSS {rss0}→{rss_w}→{rss_e} KiB (anon {anon_w}→{anon_e}"
                  + (f"; steps at cycle {', '.join(f'{c + 1}: +{d}' for c, d in steps)}" if steps else "")
                  + f"), fds {fd0}→{fd_w}→{fd_e}, threads {thr0}→{thr_w}→{thr_e} (max {thr_max})")
        # What the agent allocates must not grow with reflashes: fds and threads identical after the last cycle
        # and the first; RSS may still page in code and data a later path touches first (the binary's file
        # pages), not more than 2 MiB.
        check(fd_e == fd_w, f"open fds changed over {n} cycles: {growth}")
        check(thr_e == thr_w, f"threads changed over {n} cycles: {growth}")
        check(len(steps) <= 1 and anon_e <= anon_w + 512, f"anonymous memory grew over {n} cycles: {growth}")
        check(rss_e <= rss_w + 2048, f"RSS grew over {n} cycles: {growth}")
        return (f"{n}/{n} re-attached; p50 {statistics.median(lat):.1f}s p99 {percentile(lat, 99):.1f}s max {max(lat):.1f}s; "
                f"{growth}")

    def baseline(self):
        """The udev RUN+= script users write today, agent stopped and disabled."""
        r = self.rig
        r.sh("systemctl disable --now passthrough-agent >/dev/null 2>&1; systemctl reset-failed passthrough-agent; true")
        if r.domstate() != "running":
            self.start_guest()
        if r.card_model != "e1000e":
            self.unplug()
            r.plug("e1000e")
            r.wait_for("card back", f"[ -e {DEV}/driver ]", 60)
        if not (r.driver() == "vfio-pci" and r.hostdev_count() == 1):
            # The user's one-time manual setup: the same helper, by hand.
            r.sh(f"/usr/local/sbin/baseline-reattach {BDF}", check=True)
            r.wait_for("baseline attached", self.attached_cond(), T_ATTACH)
        r.wait_for("L2 sees the card", self.l2_sees_cond("8086:10d3"), T_L2_SEES)
        r.sh("cp /var/lib/e2e/baseline/90-baseline-reattach.rules /etc/udev/rules.d/ && udevadm control --reload", check=True)
        lat, lat_l2 = [], []
        try:
            for i in range(self.args.baseline_cycles):
                t_att, t_l2 = self.reflash("e1000e", what="baseline re-attach")
                lat.append(t_att)
                lat_l2.append(t_l2)
                log(f"baseline cycle {i + 1}/{self.args.baseline_cycles}: attached {t_att:.1f}s, L2 sees {t_l2:.1f}s")
        finally:
            r.sh("rm -f /etc/udev/rules.d/90-baseline-reattach.rules; udevadm control --reload")
            self.figures["baseline re-attach (udev RUN+=)"] = lat
            self.figures["baseline re-attach → L2 sees"] = lat_l2
        # Hand the machine back to the agent: guest stopped, card on its host driver, agent enabled.
        r.sh("virsh destroy l2 >/dev/null 2>&1; "
             f"echo > {DEV}/driver_override; [ -e {DEV}/driver ] && echo {BDF} > {DEV}/driver/unbind; "
             f"echo {BDF} > /sys/bus/pci/drivers_probe; systemctl enable --now passthrough-agent >/dev/null 2>&1; true")
        return f"{len(lat)}/{self.args.baseline_cycles} re-attached; median {statistics.median(lat):.1f}s max {max(lat):.1f}s"

    # ---- the floor (issue 14): agent / floor program / udev baseline, alternated over the same reflash ----
    FLOOR_UNIT = "e2e-floor"
    BASELINE_RULES = "/etc/udev/rules.d/90-baseline-reattach.rules"

    AGENT_BEFORE = "/usr/local/sbin/passthrough-agent-before"
    BEFORE_DROPIN = f"{DROPIN}/e2e-agent-before.conf"

    def contender_on(self, who):
        """Only `who` handles the card's next `add`: the agent (its service), the floor program (a transient
        unit, Type=notify: started once its connection and monitor are up), the baseline's udev rule, or
        "agent-before" (the service running the image's E2E_AGENT_BEFORE build, through a runtime drop-in)."""
        r = self.rig
        if who == "agent-before":
            r.sh(f"mkdir -p {DROPIN} && printf '[Service]\\nExecStart=\\nExecStart={self.AGENT_BEFORE} run\\n' "
                 f">{self.BEFORE_DROPIN} && systemctl daemon-reload", check=True)
        if who in ("agent", "agent-before"):
            r.sh("systemctl start passthrough-agent", check=True, timeout=120)
            r.wait_for("agent READY", "systemctl is-active -q passthrough-agent", T_READY)
        else:
            r.sh("systemctl stop passthrough-agent", check=True, timeout=120)
        if who == "floor":
            r.sh(f"systemd-run --quiet --unit={self.FLOOR_UNIT} -p Type=notify /usr/local/sbin/passthrough-floor "
                 f"qemu:///system {BDF} l2", check=True, timeout=120)
        if who == "baseline":
            r.sh(f"cp /var/lib/e2e/baseline/90-baseline-reattach.rules {self.BASELINE_RULES} && udevadm control --reload",
                 check=True)

    def contender_off(self, who):
        r = self.rig
        if who == "agent-before":
            r.sh(f"systemctl stop passthrough-agent; rm -f {self.BEFORE_DROPIN}; systemctl daemon-reload", timeout=120)
        if who == "floor":
            r.sh(f"systemctl stop {self.FLOOR_UNIT}; systemctl reset-failed {self.FLOOR_UNIT} 2>/dev/null; true")
        if who == "baseline":
            r.sh(f"rm -f {self.BASELINE_RULES}; udevadm control --reload")

    def l1_clock_offset(self):
        """L1's realtime clock minus L0's, from qemu-guest-agent's guest-get-time (one round trip, no process
        in L1): the sample with the shortest round trip, its error at most half that."""
        best = None
        for _ in range(5):
            t0 = time.time()
            ns = self.rig.qga.call("guest-get-time")
            t1 = time.time()
            if best is None or t1 - t0 < best[0]:
                best = (t1 - t0, ns / 1e9 - (t0 + t1) / 2)
        return best[1]

    def timed_reflash(self, who):
        """One reflash of the e1000e, timed on L1's clock by a watcher started before device_add (50 ms polls,
        no guest-exec round trip in the figures): device_add (L0's time, mapped onto L1's clock) → the
        function in sysfs → vfio-pci + hostdev in the live XML → L2's next PCI line lists it."""
        r = self.rig
        self.unplug()
        r.wait_for("hostdev gone from live XML", f"! grep -q '<hostdev' {STATUS_XML}", 60)
        tag = f"floor-watch-{who}"
        limit = T_ATTACH + T_L2_SEES
        r.spawn(tag, f"end=$(( $(date +%s) + {limit} )); late() {{ [ $(date +%s) -ge $end ] && exit 99; sleep 0.05; }}; "
                     f"until [ -e {DEV} ]; do late; done; a=$(date +%s.%N); "
                     f"until {self.attached_cond()}; do late; done; b=$(date +%s.%N); "
                     f"until {self.l2_sees_cond('8086:10d3')}; do late; done; echo $a $b $(date +%s.%N)")
        offset = self.l1_clock_offset()
        t_add = time.time() + offset
        r.plug("e1000e")
        job = r.collect(tag, limit + 10)
        if not job.done or job.rc != 0:
            raise Fail(f"{who}: not re-attached and seen within {limit} s ({job}); card driver={r.driver()}, "
                       f"hostdevs={r.hostdev_count()}")
        appear, attached, seen = (float(x) for x in job.out.split()[-3:])
        return attached - t_add, seen - t_add, attached - appear

    def floor(self):
        """Agent, floor program and udev baseline take turns over the same reflash, --floor-rounds rounds of
        one each; only the one whose turn it is runs."""
        r = self.rig
        n = self.args.floor_rounds
        contenders = ("agent", "floor", "baseline")
        if r.sh(f"[ -x {self.AGENT_BEFORE} ]")[0] == 0:
            contenders += ("agent-before",)
        times = {who: ([], [], []) for who in contenders}  # device_add → attached, → L2 sees; sysfs → attached
        if r.domstate() != "running":
            self.start_guest()
        if r.card_model != "e1000e":
            self.unplug()
            r.plug("e1000e")
        r.wait_for("card attached (agent)", self.attached_cond(), T_ATTACH)
        r.wait_for("L2 sees the card", self.l2_sees_cond("8086:10d3"), T_L2_SEES)
        try:
            for i in range(n):
                for who in contenders:
                    self.contender_on(who)
                    try:
                        result = self.timed_reflash(who)
                    finally:
                        self.contender_off(who)
                    for series, value in zip(times[who], result):
                        series.append(value)
                    log(f"floor round {i + 1}/{n}, {who}: device_add → attached {result[0]:.2f} s, → L2 sees "
                        f"{result[1]:.2f} s (sysfs → attached {result[2]:.2f} s)")
        finally:
            for who in contenders[1:]:
                self.contender_off(who)
            r.sh("systemctl start passthrough-agent", timeout=120)
            for who in contenders:
                att, seen, sysfs = times[who]
                self.figures[f"floor round, {who}: device_add → attached"] = att
                self.figures[f"floor round, {who}: device_add → L2 sees"] = seen
                self.figures[f"floor round, {who}: in sysfs → attached"] = sysfs
        med = {who: statistics.median(times[who][0]) for who in contenders}
        return (f"{n}/{n} rounds; device_add → attached, median: " + ", ".join(f"{who} {med[who]:.2f} s" for who in contenders)
                + f"; agent/floor {med['agent'] / med['floor']:.2f}, agent/baseline {med['agent'] / med['baseline']:.2f}")

    # ---- eight cards on one host (issue 14) -------------------------------------------------
    EIGHT_GUESTS = ("l2", "l2b")  # cards 0–3 are lent to l2, 4–7 to l2b

    def eight_attached_cond(self, n):
        """Card n (fpgaN, 0000:0(N+1):00.0) on vfio-pci and in its guest's live XML. The guests are i440fx machines,
        every guest-side address on bus 0: a bus='0x0M' with M ≥ 1 there is a card's host address."""
        bus = f"{n + 1:02x}"
        guest = self.EIGHT_GUESTS[n // 4]
        return (f'[ "$(basename "$(readlink /sys/bus/pci/devices/0000:{bus}:00.0/driver 2>/dev/null)" 2>/dev/null)" = vfio-pci ] '
                f"&& grep -q \"bus='0x{bus}'\" /run/libvirt/qemu/{guest}.xml 2>/dev/null")

    def eight_gone_cond(self, cards):
        """Every card in `cards` gone from L1's bus and from its guest's live XML."""
        return " && ".join(f"[ ! -e /sys/bus/pci/devices/0000:{n + 1:02x}:00.0 ] && "
                           f"! grep -q \"bus='0x{n + 1:02x}'\" /run/libvirt/qemu/{self.EIGHT_GUESTS[n // 4]}.xml" for n in cards)

    def timed_return(self, cards, tag):
        """Reflashes `cards` at once (device_del of each, then device_add of each) and returns, for each, the
        seconds from the first device_add to the card on vfio-pci and in its guest's live XML — on L1's clock,
        read by a watcher started before the first device_add (50 ms polls)."""
        r = self.rig
        ids = [f"fpga{n}" for n in cards]
        r.unplug_all(ids, timeout=T_DETACH * 2)
        r.wait_for("cards gone from L1 and from the guests' live XML", self.eight_gone_cond(cards), 120)
        limit = T_ATTACH
        branches = " ".join(f"{n}) if {self.eight_attached_cond(n)}; then echo \"{n} $(date +%s.%N)\"; "
                            f"else next=\"$next {n}\"; fi ;;" for n in cards)
        r.spawn(tag, f"end=$(( $(date +%s) + {limit} )); left='{' '.join(map(str, cards))}'; "
                     f"while [ -n \"$left\" ]; do [ $(date +%s) -ge $end ] && exit 99; next=''; "
                     f"for n in $left; do case $n in {branches} esac; done; left=$next; sleep 0.05; done")
        offset = self.l1_clock_offset()
        t_add = time.time() + offset
        r.plug_all("e1000e", ids)
        job = r.collect(tag, limit + 10)
        back = {int(n): float(t) - t_add for n, t in (line.split() for line in job.out.splitlines() if len(line.split()) == 2)}
        if not job.done or job.rc != 0 or set(back) != set(cards):
            missing = [n for n in cards if n not in back]
            raise Fail(f"not back within {limit} s: {', '.join(f'fpga{n}' for n in missing)} ({job}); drivers: "
                       + ", ".join(f"fpga{n}={r.driver(f'0000:{n + 1:02x}:00.0')}" for n in missing))
        return back

    def l2_sees_cards(self, console, count):
        # The serial console ends its lines with \r\n: the last device on the line carries the \r.
        return f"grep L2-PCI {console} | tail -n 1 | tr -d '\\r' | tr ' ' '\\n' | grep -c '=0x8086:0x10d3$' | grep -qx {count}"

    def wait_l2_sees_cards(self, console, count, what):
        try:
            self.rig.wait_for(what, self.l2_sees_cards(console, count), T_L2_SEES)
        except RigError as e:
            last = self.rig.out(f"grep L2-PCI {console} | tail -n 1")
            raise Fail(f"{e}; the guest's last PCI line: {last[:600]!r}")

    def s26_eight_cards(self):
        """Eight cards on one host: L1 rebooted with eight e1000e on eight root ports, four lent to l2 and four to
        l2b, both running. One card reflashed alone (three times), then all eight at once (device_del ×8, then
        device_add ×8): every card back in its guest; then the same under eight floor programs, and the agent's
        last card back within 1.35× the floor's last. (The issue's goal, the last within 1.5× one card alone,
        is printed: the floor itself is far from it, see the README.) L1 keeps its eight cards: run it last."""
        r = self.rig
        cards = list(range(8))
        log("rebooting L1 with eight cards on eight root ports")
        r.shutdown()
        r.boot("e1000e", cards=8)
        self.wait_agent_ready()
        self.require_agent()
        since = int(r.l1_time())
        entries = "".join(f'\\n[[card]]\\nname = "fpga{n}"\\naddress = "0000:{n + 1:02x}:00"\\nids = ["8086:10d3", "8086:100e"]\\n'
                          f'guest = "{self.EIGHT_GUESTS[n // 4]}"\\n' for n in cards[1:])
        r.sh(f"printf '{entries}' >>{self.CONFIG} && systemctl reload passthrough-agent", check=True)
        time.sleep(2)
        rejected = [e.get("MESSAGE") for e in r.journal(since=since - 1) if "rejected" in str(e.get("MESSAGE", ""))]
        check(not rejected, f"precondition: the agent rejected the eight-card configuration: {rejected[:1]}")
        r.sh(": > /var/log/l2b-console.log; mkdir -p /run/e2e && sed -e 's|<name>l2</name>|<name>l2b</name>|' -e '/<uuid>/d' "
             f"-e 's|l2-console.log|l2b-console.log|' {L2_XML} >/run/e2e/l2b.xml && virsh define /run/e2e/l2b.xml >/dev/null && "
             "virsh start l2b", check=True, timeout=180)
        self.start_guest()  # l2; l2b boots alongside
        r.wait_for("l2b boot", "grep -q L2-BOOTED /var/log/l2b-console.log", T_L2_BOOT)
        r.wait_for("all eight cards attached", " && ".join(self.eight_attached_cond(n) for n in cards), T_ATTACH)
        for console in ("/var/log/l2-console.log", "/var/log/l2b-console.log"):
            self.wait_l2_sees_cards(console, 4, f"four cards seen in {console}")

        alone = [self.timed_return([0], f"eight-alone-{i}")[0] for i in range(3)]
        single = statistics.median(alone)
        log(f"one card alone, device_add → attached: {', '.join(f'{t:.2f}' for t in alone)} s")
        together = self.timed_return(cards, "eight-together")
        last = max(together.values())
        log(f"all eight at once, device_add → attached: {', '.join(f'{together[n]:.2f}' for n in cards)} s")
        for console in ("/var/log/l2-console.log", "/var/log/l2b-console.log"):
            self.wait_l2_sees_cards(console, 4, f"four cards seen again in {console}")
        # The floor for eight: eight floor programs, one per card, each acting on its card's `add` at once with
        # a connection of its own — no lane, no settle, no check. What libvirt and the kernel leave of the
        # eight attaches, the agent cannot beat.
        self.eight_floor_on(cards)
        try:
            floor = self.timed_return(cards, "eight-floor")
        finally:
            self.eight_floor_off(cards)
        floor_last = max(floor.values())
        log(f"the floor, eight at once, device_add → attached: {', '.join(f'{floor[n]:.2f}' for n in cards)} s")
        r.wait_for("all eight cards attached again under the agent", " && ".join(self.eight_attached_cond(n) for n in cards), T_ATTACH)
        self.figures["eight cards: one card alone, device_add → attached"] = alone
        self.figures["eight cards: all eight at once, device_add → each attached"] = sorted(together.values())
        self.figures["eight cards: the floor (eight floor programs), device_add → each attached"] = sorted(floor.values())
        ratio, to_floor = last / single, last / floor_last
        detail = (f"one card alone {single:.2f} s (median of 3); all eight at once: first back {min(together.values()):.2f} s, "
                  f"last {last:.2f} s ({ratio:.2f}× one card); the floor's eight: last {floor_last:.2f} s "
                  f"({floor_last / single:.2f}× one card), agent/floor {to_floor:.2f}; each guest's PCI scan lists its four")
        check(to_floor <= self.EIGHT_TO_FLOOR, f"the last of eight took {to_floor:.2f}× the floor's (at most {self.EIGHT_TO_FLOOR}×): {detail}")
        return detail

    # The agent's last of eight against the floor's: its lanes add a settle and the checks per card, in turn
    # within a guest; and one run of eight varies by a second with L0's load (1.24 and 1.30 at 20a9f89 and
    # 9855072, the floor's last 16.1 s both times).
    EIGHT_TO_FLOOR = 1.35

    def eight_floor_on(self, cards):
        """The agent stopped (the cards stay where they are), one floor program per card started."""
        r = self.rig
        r.sh("systemctl stop passthrough-agent", check=True, timeout=120)
        for n in cards:
            r.sh(f"systemd-run --quiet --unit={self.FLOOR_UNIT}-{n} -p Type=notify /usr/local/sbin/passthrough-floor "
                 f"qemu:///system 0000:{n + 1:02x}:00.0 {self.EIGHT_GUESTS[n // 4]}", check=True, timeout=120)

    def eight_floor_off(self, cards):
        r = self.rig
        r.sh("; ".join(f"systemctl stop {self.FLOOR_UNIT}-{n}; systemctl reset-failed {self.FLOOR_UNIT}-{n} 2>/dev/null"
                       for n in cards) + "; true", timeout=120)
        r.sh("systemctl start passthrough-agent", check=True, timeout=120)
        self.wait_agent_ready()

    def s10_stopped_and_vanished(self):
        r = self.rig
        self.require_agent()
        if r.domstate() == "running":
            r.sh("virsh destroy l2", check=True)
        model = r.card_model
        r.wait_for("card on its host driver", self.drv_is(self.host_driver_for(model)), T_ATTACH)
        # (a) reflash while the guest is stopped: back on the host driver, and it stays there.
        self.reflash("e1000e", attached=False)
        r.wait_for("card on e1000e after reflash", self.drv_is("e1000e"), T_ATTACH)
        time.sleep(10)
        check(r.driver() == "e1000e", f"card left e1000e while the guest is stopped: {r.driver()}")
        check(r.hostdev_count() == 0, "guest stopped, yet a hostdev is in its XML")
        # (b) a card that never comes back.
        since = int(r.l1_time())
        self.unplug()
        deadline = time.monotonic() + 150
        found = None
        while time.monotonic() < deadline and not found:
            time.sleep(5)
            found = next((e.get("MESSAGE") for e in r.journal(since=since - 1)
                          if e.get("MESSAGE_ID") in MID_VANISHED
                          or (isinstance(e.get("MESSAGE"), str) and VANISHED.search(e["MESSAGE"]))), None)
        check(found, "no 'vanished'/timeout notification from the agent within 150 s of the card leaving")
        active = r.out("systemctl is-active passthrough-agent")
        check(active == "active", f"agent not active after the card vanished: {active}")
        sysrun = r.out("systemctl is-system-running")
        failed = r.out("systemctl --failed --no-legend --plain | awk '{print $1}' | tr '\\n' ' '")
        check(sysrun == "running" or "passthrough" not in failed, f"system {sysrun}, failed units: {failed}")
        return f"host driver kept while stopped; vanished: '{found[:90]}'; system {sysrun}"

    def s9_journal(self):
        r = self.rig
        self.require_agent()
        ids = self.catalog_ids()
        entries = r.journal()
        seen = {e.get("MESSAGE_ID") for e in entries if e.get("MESSAGE_ID")}
        ours = seen & set(ids)
        check(ours, f"no journal entry with a catalog MESSAGE_ID (catalog has {len(ids)})")
        with_card = [e for e in entries if e.get("MESSAGE_ID") in ids and e.get("PASSTHROUGH_CARD") == "fpga0"]
        check(with_card, "catalog entries lack PASSTHROUGH_CARD=fpga0")
        missing_fields = [f for f in ("PCI_SLOT",) if not any(f in e for e in with_card)]
        check(not missing_fields, f"no notification carries {missing_fields}")
        explained = r.out("journalctl -u passthrough-agent -x --no-pager | grep -c 'Defined-By: passthrough-agent' || true")
        # _PID=1: the service manager's own messages (qemu-ga logs our command lines, grep included).
        wd = r.out("journalctl --no-pager _PID=1 | grep -c 'passthrough-agent.service: Watchdog timeout' || true")
        check(int(wd or 0) == 0, f"the watchdog fired {wd} time(s)")
        props = dict(l.split("=", 1) for l in r.out(
            "systemctl show -p ActiveState -p SubState -p Type -p WatchdogUSec -p NotifyAccess passthrough-agent").splitlines() if "=" in l)
        check(props.get("ActiveState") == "active" and props.get("Type") == "notify", f"service state {props}")
        names = {}
        for block in open(CATALOG).read().split("\n-- ")[1:]:
            mid, subj = block[:32], re.search(r"Subject: (.*)", block)
            names[mid] = re.sub(r"^Card (@PASSTHROUGH_CARD@ |at @PCI_SLOT@ )?", "", subj.group(1)).split(" ")[0] if subj else mid
        return (f"{len(ours)}/{len(ids)} catalog ids seen ({', '.join(sorted(names.get(i, i) for i in ours))}); "
                f"catalog text shown by journalctl -x: {explained}; READY (Type=notify, active); watchdog never fired")

    # ---- orchestration --------------------------------------------------------------
    # Every scenario: its number (or name), title and method.
    SCENARIOS = {
        "1": ("boot, guest stopped → card on host driver", "s1_boot_stopped"),
        "12": ("reflash --prepare, guest without OS → refused, host not wedged", "s12_prepare_guest_without_os"),
        "21": ("guest requests: prepare/finish from inside l2, the card's return, another guest refused", "s21_guest_requests"),
        "22": ("guard modes: link-disable and while-lent flip exactly their bits, while-lent survives a restart", "s22_guard_modes"),
        "17": ("fatal AER while attached, guest paused by QEMU → notified, no wedge, converges", "s17_aer_while_attached"),
        "2": ("guest starts → vfio-pci, attached, L2 sees it", "s2_guest_starts"),
        "3": ("reflash (same ID) → re-attached", "s3_reflash_same"),
        "4": ("reflash with a new ID → re-attached, 'ID changed'", "s4_reflash_new_id"),
        "25": ("metrics textfile: promtool-clean, card attached and its reflashes counted, refreshed every 30 s", "s25_metrics"),
        "6": ("libvirtd restart → no duplicate attach", "s6_libvirtd_restart"),
        "23": ("bigger bitstream: BAR fits after the agent's rescan above the port, or not attached with the fix; check's facts",
               "s23_bigger_bitstream"),
        "24": ("package upgraded in place (dpkg -i, next revision) → restarted, config kept, card stays in l2", "s24_package_upgrade"),
        "7": ("kill -9 mid-rebind → restarted, converged", "s7_kill9_mid_rebind"),
        "8": ("{cycles} reflash cycles, RSS/fds flat", "s8_cycles"),
        "5": ("guest stops → host driver; starts → re-attached", "s5_guest_stop_start"),
        "11": ("reflash --prepare / --finish (JTAG) → re-attached, guard restored", "s11_reflash_prepare_finish"),
        "15": ("reflash --finish without --prepare → refused, guest keeps the card", "s15_finish_without_prepare"),
        "16": ("run --dry-run + reflash --prepare → refused, nothing moved", "s16_dry_run_refuses"),
        "13": ("kill -9 between --prepare and --finish → guard held, --finish works", "s13_kill9_while_held"),
        "14": ("restart, stop + start between --prepare and --finish → guard held, --finish works", "s14_restart_while_held"),
        "18": ("guest stops, host-driver refuses the card → a few tries, never driverless; fixed → back", "s18_host_driver_refuses"),
        "20": ("started with the card driverless (± override vfio-pci), guest stopped → host driver", "s20_started_with_card_driverless"),
        "19": ("vfio-pci blocked from loading, guest starts → nothing unbound, bounded tries; loaded → attached",
               "s19_vfio_pci_not_loadable"),
        "floor": ("agent vs floor vs baseline, alternated, {floor_rounds} rounds", "floor"),
        "baseline": ("udev RUN+= script, {baseline_cycles} cycles", "baseline"),
        "10": ("reflash while stopped; card never returns", "s10_stopped_and_vanished"),
        "26": ("eight cards, two guests, all reflashed at once → all back, the last within 1.35× the floor's eight", "s26_eight_cards"),
        "9": ("journal ids + fields, READY, no watchdog", "s9_journal"),
    }
    # Each tier in the order it runs. L2 takes 1–10 minutes to boot under nested TCG, so the order follows
    # the guest's state: a scenario that needs l2 running comes while it runs, one that stops it comes last
    # of its stretch. `ci` (make test-all) boots L2 twice (2, 19) and leaves out what costs a boot of its own
    # (21: two guests, 5: stop + start) and the baseline comparison, all in `full` (make e2e). 12 comes before
    # L2's first boot: its guest has no OS and needs none. 17 (unmeasured on the final agent; once the card's
    # BARs read back cleared after the link reset, see README.md) and the floor run only when --only names them.
    TIERS = {
        "full": ["1", "12", "21", "22", "2", "3", "4", "25", "6", "23", "24", "7", "8", "5", "11", "15", "16", "13", "14",
                 "18", "20", "19", "baseline", "10", "9", "26"],
        "ci": ["1", "12", "20", "2", "3", "4", "25", "6", "23", "24", "7", "8", "11", "15", "16", "13", "14", "18", "19",
               "22", "10", "9"],
        "short": ["1", "2", "3", "4", "25", "6", "24", "8", "baseline", "10", "9"],
    }
    # --only picks from every scenario, in full's order; 17 before 2 (it starts its own guest), the floor
    # before the baseline. 26 runs last in `full` (it reboots L1 with eight cards and leaves it so).
    ORDER_FOR_ONLY = TIERS["full"][:4] + ["17"] + TIERS["full"][4:-4] + ["floor"] + TIERS["full"][-4:]

    def name(self, key):
        """`KEY: title`, as the results and the logs show it."""
        a = self.args
        return f"{key}: {self.SCENARIOS[key][0].format(cycles=a.cycles, baseline_cycles=a.baseline_cycles, floor_rounds=a.floor_rounds)}"

    def plan(self):
        """The scenario keys this run goes through, in order."""
        if self.args.only:
            return [k for k in self.ORDER_FOR_ONLY if k in self.args.only]
        return self.TIERS[self.args.tier]

    # What a scenario may take on a slow CI machine (nested L2 boots of 5–10 minutes), for the time budget.
    L1_BOOT_BUDGET = 600
    BUDGET = {"2": 900, "19": 1000, "21": 1500, "5": 900, "baseline": 900, "floor": 1800, "26": 2400}

    def fits(self, key):
        """Whether scenario `key` can still end before E2E_DEADLINE (epoch seconds; CI's time limit less a
        margin). Without one, everything fits. Once one does not, the rest of the run is left out too (each
        scenario leaves the guest where the next expects it): they are listed as not run, never as passed."""
        deadline = self.args.deadline
        if not deadline:
            return True
        need = self.BUDGET.get(key, 60 + 30 * self.args.cycles if key == "8" else 300)
        return time.time() + need <= deadline

    def wait_agent_ready(self):
        r = self.rig
        if self.args.mock_agent:
            log("--mock-agent: running the MOCK daemon (rig self-test), not passthrough-agent")
            r.sh("mkdir -p /run/systemd/system/passthrough-agent.service.d && "
                 "cp /var/lib/e2e/mock/mock.conf /run/systemd/system/passthrough-agent.service.d/ && "
                 "systemctl daemon-reload && systemctl reset-failed passthrough-agent; "
                 "systemctl enable passthrough-agent >/dev/null 2>&1; systemctl restart passthrough-agent", timeout=120)
        try:
            # Active (Type=notify: READY=1 received), or given up: exit 64 (usage, e.g. no `run`) or 78 (config).
            r.wait_for("passthrough-agent READY or failed for good",
                       "systemctl is-active -q passthrough-agent || "
                       "systemctl show -p ExecMainStatus --value passthrough-agent | grep -qx -e 64 -e 78", T_READY)
            if r.out("systemctl is-active passthrough-agent") != "active":
                raise RigError("not active")
            mono = int(r.out("systemctl show -p ActiveEnterTimestampMonotonic --value passthrough-agent") or 0)
            self.figures.setdefault("boot to READY (L1 kernel start → READY=1)", [mono / 1e6])
            self.agent_ready = True
            log(f"agent READY {mono / 1e6:.1f}s after L1 kernel start")
        except RigError:
            self.agent_ready = False
            self.agent_why = self.agent_state()[1]
            log(f"agent NOT ready: {self.agent_why}")

    def main(self):
        a = self.args
        t0 = time.monotonic()
        if self.args.deadline and time.time() + self.L1_BOOT_BUDGET > self.args.deadline:
            self.not_run = [self.name(key) for key in self.plan()]
            log("not run, past the time budget (E2E_DEADLINE): everything (no time to boot L1)")
            return self.summary()
        try:
            self.rig.boot("e1000e")
            self.figures["L1 boot to systemd running"] = [self.rig.timings["boot_to_running"]]
            self.wait_agent_ready()
            if a.demo:
                return self.demo()
            for key in self.plan():
                if self.not_run or not self.fits(key):
                    self.not_run.append(self.name(key))
                    continue
                if key == "10":
                    self.wait_agent_ready()  # the baseline hands the machine back with the agent re-enabled
                self.run(self.name(key), getattr(self, self.SCENARIOS[key][1]))
            if self.not_run:
                log(f"not run, past the time budget (E2E_DEADLINE): {', '.join(n.split(':')[0] for n in self.not_run)}")
        finally:
            try:
                if self.rig.qga and self.rig.proc and self.rig.proc.poll() is None and not self.l1_dead:
                    self.rig.sh("journalctl -b --no-pager > /var/tmp/j.txt; true")
                    open(os.path.join(WORK, "l1-journal.txt"), "w").write(self.rig.out("journalctl -b --no-pager -o short-precise", timeout=300))
            except Exception as e:
                log(f"could not save L1 journal: {e}")
            self.rig.shutdown()
            self.figures["total run"] = [time.monotonic() - t0]
        return self.summary()

    def demo(self):
        r = self.rig
        stop = threading.Event()

        def stream():
            r.sh("rm -f /run/e2e-demo.cursor")
            while not stop.is_set():
                try:
                    out = r.out("journalctl -u passthrough-agent --no-pager -o short-precise --cursor-file=/run/e2e-demo.cursor")
                    for line in out.splitlines():
                        if not line.startswith("-- "):
                            print(f"    L1 journal | {line}", flush=True)
                except Exception:
                    pass
                stop.wait(1.0)

        th = threading.Thread(target=stream, daemon=True)
        th.start()
        try:
            for key in ("2", "3", "4"):
                self.run(self.name(key), getattr(self, self.SCENARIOS[key][1]))
            time.sleep(2)
        finally:
            stop.set()
            th.join(10)
        return self.summary()

    def floor_summary(self):
        """The floor round's table: each contender's median and p90, and the agent's ratios to the others."""
        what = ("device_add → attached", "device_add → L2 sees", "in sysfs → attached")
        rows = {w: {who: self.figures.get(f"floor round, {who}: {w}") for who in ("agent", "floor", "baseline", "agent-before")}
                for w in what}
        if not all(rows[what[0]][who] for who in ("agent", "floor", "baseline")):
            return
        print("\n| same reflash, alternated in one run | n | agent median / p90 | floor median / p90 | baseline median / p90 "
              "| agent/floor | agent/baseline |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for w in what:
            a, f, b = (rows[w][who] for who in ("agent", "floor", "baseline"))
            ma, mf, mb = statistics.median(a), statistics.median(f), statistics.median(b)
            print(f"| {w} | {len(a)} | {ma:.2f} / {p90(a):.2f} s | {mf:.2f} / {p90(f):.2f} s | {mb:.2f} / {p90(b):.2f} s "
                  f"| {ma / mf:.2f} | {ma / mb:.2f} |")
        if rows[what[0]]["agent-before"]:
            print("\n| the agent before the change (E2E_AGENT_BEFORE) | n | median / p90 | its /floor |")
            print("| --- | --- | --- | --- |")
            for w in what:
                v, f = rows[w]["agent-before"], rows[w]["floor"]
                print(f"| {w} | {len(v)} | {statistics.median(v):.2f} / {p90(v):.2f} s | {statistics.median(v) / statistics.median(f):.2f} |")

    def summary(self):
        print()
        print("| scenario | result | time | detail |")
        print("| --- | --- | --- | --- |")
        for name, ok, dt, detail in self.results:
            d = detail.replace("|", "/")
            print(f"| {name} | {'PASS' if ok else 'FAIL'} | {dt:.1f} s | {d[:220] + '…' if len(d) > 220 else d} |")
        print()
        print("| figure | n | median | p99 (n ≥ 20) | max |")
        print("| --- | --- | --- | --- | --- |")
        img = os.path.join(WORK, "image-build-seconds")
        if os.path.exists(img):
            print(f"| L1 image build (make e2e-image, this run) | 1 | {float(open(img).read()):.1f} s | | |")
        base = os.path.join(WORK, "base-build-seconds")
        if os.path.exists(base):
            print(f"| base rootfs debootstrap (cache miss only; cached since) | 1 | {float(open(base).read()):.1f} s | | |")
        for k, v in self.figures.items():
            if v:
                p99 = f"{percentile(v, 99):.1f} s" if len(v) >= 20 else ""
                print(f"| {k} | {len(v)} | {statistics.median(v):.1f} s | {p99} | {max(v):.1f} s |")
        a = self.figures.get("agent re-attach (s8 cycles)")
        b = self.figures.get("baseline re-attach (udev RUN+=)")
        if a and b:
            ratio = statistics.median(a) / statistics.median(b)
            print(f"\nre-attach after reflash, median: agent {statistics.median(a):.1f} s vs baseline "
                  f"{statistics.median(b):.1f} s → ratio agent/baseline {ratio:.2f}")
        self.floor_summary()
        passed = sum(1 for r in self.results if r[1])
        print(f"\n{passed}/{len(self.results)} scenarios passed")
        for name in self.not_run:
            print(f"NOT RUN (time budget, E2E_DEADLINE) {name}")
        # Last, so a CI log cut to its tail still says what failed and why.
        for name, ok, _, detail in self.results:
            if not ok:
                print(f"FAILED {name}: {detail}")
        json.dump({"results": [dict(name=n, ok=o, seconds=round(d, 2), detail=t) for n, o, d, t in self.results],
                   "not_run": self.not_run, "figures": self.figures}, open(os.path.join(WORK, "results.json"), "w"), indent=1)
        return 0 if passed == len(self.results) and self.results else 1


def percentile(values, p):
    """The p-th percentile (1–99), interpolated between the samples (the largest of fewer than two)."""
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1] if len(values) > 1 else max(values)


def p90(values):
    return percentile(values, 90)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tier", choices=sorted(Suite.TIERS), default="full")
    p.add_argument("--demo", action="store_true")
    p.add_argument("--cycles", type=int)
    p.add_argument("--baseline-cycles", type=int)
    p.add_argument("--floor-rounds", type=int, default=5,
                   help="rounds of the floor comparison (--only floor): one reflash each for agent, floor, baseline")
    p.add_argument("--mock-agent", action="store_true",
                   help="rig self-test: run a shell MOCK in place of the daemon (not a test of the agent)")
    p.add_argument("--pciehp", action="store_true",
                   help="L1 uses native PCIe hotplug (pciehp: attention button, 5 s delay) instead of ACPI")
    p.add_argument("--only", help="comma-separated scenario numbers and/or 'baseline', 'floor'")
    p.add_argument("--deadline", type=float, default=float(os.environ.get("E2E_DEADLINE") or 0),
                   help="epoch seconds (default $E2E_DEADLINE): a scenario that may not end by then is not started, "
                        "nor any after it; they are listed as not run")
    p.add_argument("--retry-failed", action="store_true",
                   help="run only what failed in the last run (its results.json), with scenario 1; everything when unknown")
    a = p.parse_args()
    results = os.path.join(WORK, "results.json")
    if a.retry_failed:
        a.only = retry_set(results)
    # A run that dies before its summary must not leave an older run's results behind for a retry to trust.
    if os.path.exists(results):
        os.unlink(results)
    if a.cycles is None:
        a.cycles = 100 if a.tier == "full" else 5
    if a.baseline_cycles is None:
        a.baseline_cycles = 5 if a.tier == "full" else 3
    if isinstance(a.only, str):
        a.only = set(a.only.split(","))
    sys.exit(Suite(a).main())


def retry_set(results):
    """The scenario numbers that failed in the run that wrote `results`, as a comma list for --only, plus
    scenario 1 (it boots the host's card into a known place); None (everything) when that run left no
    results or none failed: a run that died early is run again whole."""
    try:
        failed = [r["name"].split(":")[0] for r in json.load(open(results))["results"] if not r["ok"]]
    except (OSError, ValueError, KeyError):
        failed = []
    if not failed:
        log("--retry-failed: the last run left no failed scenario on record; running everything")
        return None
    log(f"--retry-failed: running again {', '.join(failed)}")
    return ",".join(sorted(set(failed) | {"1"}))


if __name__ == "__main__":
    main()
