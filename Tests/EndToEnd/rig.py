"""The end-to-end rig: L1 "FPGA host" (Debian 12, systemd, libvirt, the agent) in QEMU TCG.

L0 controls it from outside: QMP (device_del/device_add = an FPGA reflash) and qemu-guest-agent
(`guest-exec` + `guest-exec-status` on ONE connection) to run commands inside L1.
"""
import base64
import json
import os
import random
import shlex
import socket
import subprocess
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# One work directory per Debian suite of L1 (E2E_SUITE, as build-image.sh has it): Debian 12's is work/.
SUITE = os.environ.get("E2E_SUITE") or "bookworm"
WORK = os.path.join(HERE, "work" if SUITE == "bookworm" else f"work-{SUITE}")
T0 = time.monotonic()


def log(msg):
    print(f"[{time.strftime('%H:%M:%S', time.gmtime())} +{time.monotonic() - T0:7.1f}s] {msg}", flush=True)


class RigError(Exception):
    pass


class Job:
    """A command run detached in L1: `done` (it returned within the wait), `rc`, `out`, and `seconds`
    since it started (when last looked at)."""

    def __init__(self, tag, done, rc, out, seconds):
        self.tag, self.done, self.rc, self.out, self.seconds = tag, done, rc, out, seconds

    def __repr__(self):
        state = f"exit {self.rc}" if self.done else "still running"
        return f"{self.tag}: {state} after {self.seconds:.1f}s"


class QMP:
    """QMP over a unix socket; events are collected by a reader thread."""

    def __init__(self, path, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(path)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RigError(f"QMP socket {path} not available")
                time.sleep(0.1)
        self.file = self.sock.makefile("rwb", buffering=0)
        self.lock = threading.Condition()
        self.replies = []
        self.events = []
        json.loads(self.file.readline())  # greeting
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.command("qmp_capabilities")

    def _read(self):
        try:
            self._read_lines()
        except OSError:
            pass

    def _read_lines(self):
        for line in self.file:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            with self.lock:
                if "event" in msg:
                    msg["_t"] = time.monotonic()
                    self.events.append(msg)
                else:
                    self.replies.append(msg)
                self.lock.notify_all()

    def command(self, name, timeout=30, **args):
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        with self.lock:
            self.replies.clear()
            self.file.write(json.dumps(msg).encode() + b"\n")
            if not self.lock.wait_for(lambda: self.replies, timeout):
                raise RigError(f"QMP {name}: no reply in {timeout}s")
            reply = self.replies.pop(0)
        if "error" in reply:
            raise RigError(f"QMP {name} {args}: {reply['error'].get('desc')}")
        return reply.get("return")

    def wait_event(self, name, since, timeout, pred=lambda e: True):
        with self.lock:
            ok = self.lock.wait_for(
                lambda: any(e["event"] == name and e["_t"] >= since and pred(e) for e in self.events), timeout)
            if not ok:
                return None
            return next(e for e in self.events if e["event"] == name and e["_t"] >= since and pred(e))


class QGA:
    """qemu-guest-agent on one persistent connection (a new connection per call hangs in sync)."""

    def __init__(self, path, qemu=None):
        self.path = path
        self.qemu = qemu  # L1's QEMU process: no point waiting for an agent inside a machine that is gone
        self.sock = None
        self.buf = b""
        self.lock = threading.Lock()  # one request/response at a time on the one connection

    def _connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(self.path)
        self.buf = b""

    def _readmsg(self, timeout):
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout()
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("QGA connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        line = line.strip(b"\xff").strip()
        return json.loads(line) if line else None

    def sync(self, timeout=5):
        if self.sock is None:
            self._connect()
        token = random.randint(1, 2**31)
        self.sock.sendall(b"\xff" + json.dumps({"execute": "guest-sync-delimited", "arguments": {"id": token}}).encode() + b"\n")
        deadline = time.monotonic() + timeout
        while True:
            msg = self._readmsg(max(0.01, deadline - time.monotonic()))
            if msg and msg.get("return") == token:
                return True

    def wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.qemu is not None and self.qemu.poll() is not None:
                raise RigError(f"L1's QEMU exited (status {self.qemu.returncode}; see Tests/EndToEnd/work/qemu.log)")
            try:
                if self.sync(timeout=3):
                    return True
            except (OSError, socket.timeout, ValueError, RigError):
                try:
                    if self.sock:
                        self.sock.close()
                except OSError:
                    pass
                self.sock = None
                time.sleep(0.5)
        raise RigError(f"qemu-guest-agent not answering after {timeout}s")

    def call(self, name, timeout=30, **args):
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        with self.lock:
            if self.sock is None:
                self.wait_ready(60)
            try:
                self.sock.sendall(json.dumps(msg).encode() + b"\n")
                while True:
                    reply = self._readmsg(timeout)
                    if reply is None:
                        continue
                    if "error" in reply:
                        raise RigError(f"QGA {name}: {reply['error'].get('desc')}")
                    if "return" in reply:
                        return reply["return"]
            except (OSError, ValueError) as e:
                # A late reply would answer the next request: start over on a fresh, synced connection.
                try:
                    self.sock.close()
                except OSError:
                    pass
                self.sock = None
                raise RigError(f"QGA {name}: no answer ({e or 'timed out'} after {timeout}s)")

    def exec(self, cmd, timeout=60):
        pid = self.call("guest-exec", path="/bin/sh", arg=["-c", cmd], **{"capture-output": True})["pid"]
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            st = self.call("guest-exec-status", pid=pid)
            if st.get("exited"):
                out = base64.b64decode(st.get("out-data", "")).decode(errors="replace")
                err = base64.b64decode(st.get("err-data", "")).decode(errors="replace")
                return st.get("exitcode", -1), out, err
            if time.monotonic() > deadline:
                raise RigError(f"L1 command timed out after {timeout}s: {cmd}")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.3)


class Rig:
    CARD_BDF = "0000:01:00.0"
    # ivshmem-plain stands in for a bitstream whose BAR2 size we choose (plug_ivshmem); it has no host driver.
    MODELS = {"e1000e": "8086:10d3", "e1000": "8086:100e", "ivshmem-plain": "1af4:1110"}

    def __init__(self, work=WORK, pciehp=False):
        self.work = work
        self.pciehp = pciehp
        self.proc = None
        self.qmp = None
        self.qga = None
        self.card_model = None
        self.timings = {}

    # ---- lifecycle ------------------------------------------------------------------------
    def boot(self, model="e1000e", timeout=600, cards=1):
        """Boots L1 with `cards` cards of `model`, fpgaN on root port rp(N+1), so card N is at 0000:0(N+1):00.0
        (one card: rp2 stays empty, for a second card that is not plugged in)."""
        kver = open(os.path.join(self.work, "kver")).read().strip()
        for f in ("qmp.sock", "qga.sock"):
            try:
                os.unlink(os.path.join(self.work, f))
            except FileNotFoundError:
                pass
        args = [
            "qemu-system-x86_64", "-nodefaults", "-display", "none",
            "-accel", "tcg,thread=multi", "-machine", "q35",
            # No TSC-deadline timer: once, after ~300 s of reflashes, an L1 vCPU halted with its
            # deadline timer never firing (RCU stall, hung probes); the one-shot LAPIC timer is used.
            "-cpu", "max,-tsc-deadline", "-smp", "2", "-m", "2048",
            "-device", "intel-iommu,caching-mode=on",
            "-kernel", f"/boot/vmlinuz-{kver}", "-initrd", f"/boot/initrd.img-{kver}",
            "-append", "root=/dev/vda rw console=ttyS0,115200 intel_iommu=on systemd.show_status=0 mitigations=off",
            "-drive", f"file={self.work}/l1.img,if=none,id=root,format=raw,cache=unsafe,snapshot=on",
            "-device", "virtio-blk-pci,drive=root",
            "-serial", f"file:{self.work}/l1-console.log",
            "-qmp", f"unix:{self.work}/qmp.sock,server=on,wait=off",
            "-chardev", f"socket,path={self.work}/qga.sock,server=on,wait=off,id=qga0",
            "-device", "virtio-serial-pci", "-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
        ]
        for n in range(1, max(cards, 2) + 1):
            args += ["-device", f"pcie-root-port,id=rp{n},slot={n},chassis={n}"]
        for n in range(cards):
            args += ["-device", f"{model},bus=rp{n + 1},id=fpga{n}"]
        if self.pciehp:
            args += ["-global", "ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off"]
        log(f"boot L1 ({'pciehp' if self.pciehp else 'ACPI'} hotplug, {cards} × card {model})")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(args, stdout=open(os.path.join(self.work, "qemu.log"), "w"),
                                     stderr=subprocess.STDOUT)
        self.card_model = model
        self.qmp = QMP(os.path.join(self.work, "qmp.sock"))
        self.qga = QGA(os.path.join(self.work, "qga.sock"), qemu=self.proc)
        self.qga.wait_ready(timeout)
        t_qga = time.monotonic() - t0
        rc, out, _ = self.sh("systemctl is-system-running --wait", timeout=timeout)
        self.timings["boot_to_running"] = time.monotonic() - t0
        log(f"L1 up: guest agent after {t_qga:.1f}s, systemd '{out.strip()}' after {self.timings['boot_to_running']:.1f}s")
        return out.strip()

    def shutdown(self):
        if self.proc and self.proc.poll() is None:
            try:
                self.qmp.command("quit", timeout=5)
            except Exception:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    # ---- commands inside L1 ------------------------------------------------------------
    def sh(self, cmd, timeout=120, check=False):
        rc, out, err = self.qga.exec(cmd, timeout=timeout)
        if check and rc != 0:
            raise RigError(f"L1 `{cmd}` exited {rc}: {(err or out).strip()[:400]}")
        return rc, out, err

    def out(self, cmd, timeout=120):
        return self.sh(cmd, timeout=timeout)[1].strip()

    def wait_for(self, what, cmd, timeout, interval=0.0):
        """Runs a shell loop INSIDE L1 until `cmd` succeeds (no per-poll guest-exec round trip)."""
        t0 = time.monotonic()
        loop = f"end=$(( $(date +%s) + {int(timeout)} )); until {cmd}; do [ $(date +%s) -ge $end ] && exit 99; sleep 0.2; done"
        rc, _, _ = self.sh(loop, timeout=timeout + 30)
        if rc != 0:
            raise RigError(f"timed out after {timeout}s waiting for {what}")
        return time.monotonic() - t0

    # ---- commands that may hang in the kernel ----------------------------------------------
    # A process stuck in uninterruptible sleep (a PCI removal waiting for a guest) cannot be killed,
    # and a guest-exec waiting for it would take the harness's only command channel with it. These
    # run detached in L1 (own session, output to a file) and are looked at with bounded waits.
    JOBS = "/run/e2e/jobs"

    def spawn(self, tag, cmd):
        """Starts `cmd` detached in L1; its output, exit status and start time go to JOBS/tag."""
        d = f"{self.JOBS}/{tag}"
        inner = shlex.quote(f"echo $$ >{d}/pid; exec sh -c {shlex.quote(cmd)}")
        self.sh(f"rm -rf {d}; mkdir -p {d}; date +%s%N >{d}/start; "
                f"(setsid -w sh -c {inner} >{d}/out 2>&1 </dev/null; echo $? >{d}/rc) >/dev/null 2>&1 </dev/null &",
                check=True)

    def collect(self, tag, wait):
        """Waits up to `wait` seconds (in L1) for the job to end: a Job, `done` False if it has not."""
        d = f"{self.JOBS}/{tag}"
        _, out, _ = self.sh(
            f"end=$(( $(date +%s%N) + {int(wait * 1e9)} )); "
            f"until [ -e {d}/rc ] || [ $(date +%s%N) -ge $end ]; do sleep 0.1; done; "
            f"now=$(date +%s%N); echo $(( (now - $(cat {d}/start)) / 1000000 )) $(cat {d}/rc 2>/dev/null); "
            f"cat {d}/out 2>/dev/null", timeout=wait + 60)
        head, _, output = out.partition("\n")
        fields = head.split()
        rc = int(fields[1]) if len(fields) > 1 else None
        return Job(tag, rc is not None, rc, output.strip(), int(fields[0]) / 1000 if fields else None)

    def run_bounded(self, tag, cmd, wait):
        """`cmd` in L1, given `wait` seconds; a Job whose `done` says whether it returned in time."""
        self.spawn(tag, cmd)
        return self.collect(tag, wait)

    def kill_job(self, tag):
        """Ends a job's whole process group (a process in uninterruptible sleep stays until it wakes)."""
        self.sh(f"kill -9 -$(cat {self.JOBS}/{tag}/pid) 2>/dev/null; true")

    def stuck_tasks(self):
        """Tasks in uninterruptible sleep in L1, as 'command (kernel function)', or ''."""
        seen = {}
        for line in self.out("ps -eo stat=,wchan:40=,comm=").splitlines():
            f = line.split(None, 2)
            if len(f) == 3 and f[0].startswith("D"):
                key = f"{f[2]} ({f[1]})"
                seen[key] = seen.get(key, 0) + 1
        return "; ".join(f"{n}x {k}" if n > 1 else k for k, n in seen.items())

    def arm_deadman(self, tag, seconds, cmd):
        """L1 runs `cmd` by itself after `seconds` unless disarmed: a wedge the harness cannot reach
        (its command channel stuck) still ends."""
        self.sh(f"mkdir -p {self.JOBS}; rm -f {self.JOBS}/{tag}.disarmed; "
                f"(sleep {int(seconds)}; [ -e {self.JOBS}/{tag}.disarmed ] || {{ {cmd}; }}) "
                f">{self.JOBS}/{tag}.deadman 2>&1 </dev/null &", check=True)

    def disarm_deadman(self, tag):
        self.sh(f"touch {self.JOBS}/{tag}.disarmed")

    # ---- the card --------------------------------------------------------------------
    def driver(self, bdf=None):
        bdf = bdf or self.CARD_BDF
        return self.out(f"d=/sys/bus/pci/devices/{bdf}; if [ ! -e $d ]; then echo absent; "
                        f"elif [ -e $d/driver ]; then basename $(readlink $d/driver); else echo none; fi")

    def card_id(self, bdf=None):
        bdf = bdf or self.CARD_BDF
        v = self.out(f"cat /sys/bus/pci/devices/{bdf}/vendor /sys/bus/pci/devices/{bdf}/device 2>/dev/null")
        parts = v.split()
        return f"{parts[0][2:]}:{parts[1][2:]}" if len(parts) == 2 else None

    def unplug(self, timeout=120):
        """device_del at L0; returns seconds until QEMU reports DEVICE_DELETED (guest ack chain)."""
        t0 = time.monotonic()
        self.qmp.command("device_del", id="fpga0")
        ev = self.qmp.wait_event("DEVICE_DELETED", t0, timeout, lambda e: e.get("data", {}).get("device") == "fpga0")
        if ev is None:
            raise RigError(f"device_del fpga0: no DEVICE_DELETED after {timeout}s")
        self.card_model = None
        return ev["_t"] - t0

    def inject_aer(self, device, error):
        """An AER error reported by `device` (a QEMU id: "rp1" is the card's root port), through HMP's
        pcie_aer_inject_error (e.g. "MALF_TLP": uncorrectable, fatal by default severity). Returns
        QEMU's answer ("OK id: …" or why not)."""
        return self.qmp.command("human-monitor-command", **{"command-line": f"pcie_aer_inject_error {device} {error}"}).strip()

    def plug(self, model):
        t0 = time.monotonic()
        self.qmp.command("device_add", driver=model, bus="rp1", id="fpga0")
        self.card_model = model
        return t0

    def unplug_all(self, ids, timeout=300):
        """device_del of every card in `ids` at once (a host whose cards are all reprogrammed together); returns
        when QEMU has reported DEVICE_DELETED for each."""
        t0 = time.monotonic()
        for dev in ids:
            self.qmp.command("device_del", id=dev)
        for dev in ids:
            left = max(1.0, timeout - (time.monotonic() - t0))
            if self.qmp.wait_event("DEVICE_DELETED", t0, left, lambda e, d=dev: e.get("data", {}).get("device") == d) is None:
                raise RigError(f"device_del {dev}: no DEVICE_DELETED after {timeout}s")
        return time.monotonic() - t0

    def plug_all(self, model, ids):
        """device_add of `model` for every card in `ids` (fpgaN on rp(N+1)), back to back; returns the time of
        the first."""
        t0 = time.monotonic()
        for dev in ids:
            self.qmp.command("device_add", driver=model, bus=f"rp{int(dev[4:]) + 1}", id=dev)
        return t0

    def plug_ivshmem(self, size, backend):
        """A "bitstream" whose BAR2 has `size` bytes: ivshmem-plain (1af4:1110, 64-bit prefetchable BAR2 the
        size of its memory backend) on rp1. The backend is reserved lazily (reserve=off: no swap accounting), so
        a BAR of many GiB costs L0 nothing until the guest touches it. Returns the time of device_add."""
        self.qmp.command("object-add", **{"qom-type": "memory-backend-ram", "id": backend, "size": size, "reserve": False})
        t0 = time.monotonic()
        self.qmp.command("device_add", driver="ivshmem-plain", memdev=backend, bus="rp1", id="fpga0")
        self.card_model = "ivshmem-plain"
        return t0

    # ---- libvirt / L2 --------------------------------------------------------------
    def hostdev_count(self):
        out = self.out("virsh dumpxml l2 2>/dev/null | grep -c '<hostdev' || true")
        return int(out or 0)

    def domstate(self):
        return self.out("virsh domstate l2 2>&1")

    def l2_console(self):
        return self.out("cat /var/log/l2-console.log 2>/dev/null")

    def l2_sees(self, pci_id):
        """Latest L2-PCI line on L2's console lists the vendor:device."""
        v, d = pci_id.split(":")
        lines = [l for l in self.l2_console().splitlines() if l.startswith("L2-PCI")]
        return bool(lines) and f"=0x{v}:0x{d}" in lines[-1]

    def journal(self, unit="passthrough-agent", since=None):
        cmd = f"journalctl -o json --no-pager -u {unit}"
        if since:
            cmd += f" --since=@{since}"
        rc, out, _ = self.sh(cmd, timeout=120)
        entries = []
        for line in out.splitlines():
            try:
                entries.append(json.loads(line))
            except ValueError:
                pass
        return entries

    def l1_time(self):
        return float(self.out("date +%s.%N"))
