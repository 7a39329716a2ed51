import PassthroughAgent
import PassthroughCore
import PassthroughLibvirt
import PassthroughSysfs
import PassthroughTestSupport
import Testing

private let f0 = PCIAddress("0000:01:00.0")!
private let f1 = PCIAddress("0000:01:00.1")!
private let card: Set<PCIAddress> = [f0, f1]

/// The Alveo host (both functions in IOMMU group 5), a fake libvirt, and a fake /proc in the same tree.
/// The group's character device gets /dev/null's number (1:3), so a process "holds" it with an fd that
/// really leads to /dev/null, and `stat` through the link finds that number as it would on a host.
private struct Host {
    let bus = readyHost()
    let hypervisor: FakeHypervisor

    init(vfioGroup: Bool = true) {
        hypervisor = FakeHypervisor(bus: bus)
        if vfioGroup { bus.sysfs.addVFIOGroup("5", device: "1:3") }
    }

    var check: HolderCheck { HolderCheck(hypervisor: hypervisor, host: bus.host) }

    /// A regular file of the tree, to stand for an fd that is no device at all.
    var regularFile: String { bus.sysfs.root.appending("bus/pci/rescan").string }
}

private func heldBy(_ verdict: HolderVerdict) -> [Holder] {
    guard case .held(let holders) = verdict else { return [] }
    return holders
}

@Suite("Who holds a card's functions")
struct HolderCheckTests {
    @Test("nobody: free, whatever runs without them")
    func free() async {
        let host = Host()
        await host.hypervisor.define("fpga-dev", state: .running)
        host.bus.sysfs.addProcess(300, command: "bash", openFiles: ["/dev/zero", host.regularFile])
        #expect(await host.check.holders(of: card) == .free)
    }

    @Test("several domains: the running, the paused and the crashed one hold what their live XML lists; the shut-off one holds nothing")
    func severalDomains() async {
        let host = Host()
        let hypervisor = host.hypervisor
        await hypervisor.define("fpga-dev", state: .running)
        await hypervisor.hold(f0, in: "fpga-dev")
        await hypervisor.define("debug-vm", state: .paused)
        await hypervisor.hold(f1, in: "debug-vm")
        await hypervisor.define("panicked", state: .crashed)
        await hypervisor.hold(f0, in: "panicked")
        await hypervisor.hold(f1, in: "panicked")
        await hypervisor.define("old-vm", state: .shutOff)
        await hypervisor.hold(f0, in: "old-vm")  // its inactive XML: no process behind it
        await hypervisor.define("router", state: .running)

        let verdict = await host.check.holders(of: card)
        #expect(heldBy(verdict) == [
            .guest(GuestName("debug-vm")!, state: .paused, functions: [f1]),
            .guest(GuestName("fpga-dev")!, state: .running, functions: [f0]),
            .guest(GuestName("panicked")!, state: .crashed, functions: [f0, f1]),
        ])
        let text = verdict.description
        #expect(text.contains("0000:01:00.0 is held by guest fpga-dev: shut down or `virsh destroy fpga-dev`, or detach it first"))
        #expect(text.contains("0000:01:00.1 is held by guest debug-vm, which is paused and cannot let go: resume it (`virsh resume debug-vm`)"))
        #expect(text.contains("0000:01:00.0, 0000:01:00.1 are held by guest panicked, which crashed and whose QEMU is kept (on_crash=preserve): `virsh destroy panicked`"))
        #expect(!text.contains("old-vm") && !text.contains("router"))
    }

    @Test("only the functions asked about count")
    func onlyTheFunctionsAsked() async {
        let host = Host(vfioGroup: false)
        await host.hypervisor.define("fpga-dev", state: .running)
        await host.hypervisor.hold(f1, in: "fpga-dev")
        #expect(await host.check.holders(of: [f0]) == .free)
        #expect(heldBy(await host.check.holders(of: [f0, f1])).count == 1)
    }

    @Test("libvirt unreachable: unknown, hands off")
    func libvirtUnreachable() async {
        let host = Host()
        await host.hypervisor.setReachable(false)
        let verdict = await host.check.holders(of: card)
        guard case .unknown(let reason) = verdict else {
            Issue.record("expected unknown, got \(verdict)")
            return
        }
        #expect(reason.contains("libvirt cannot tell which guests hold 0000:01:00.0, 0000:01:00.1"))
        #expect(reason.contains("not connected to libvirt"))
        #expect(verdict.description.hasPrefix("cannot tell who holds them, so they are left alone"))
    }

    @Test("a live XML that cannot be read: unknown, naming the domain")
    func unparsableXML() async {
        let host = Host()
        await host.hypervisor.define("fpga-dev", state: .running)
        await host.hypervisor.define("mystery", state: .running)
        await host.hypervisor.breakLiveXML(of: "mystery")
        let verdict = await host.check.holders(of: card)
        guard case .unknown(let reason) = verdict else {
            Issue.record("expected unknown, got \(verdict)")
            return
        }
        #expect(reason.contains("domain mystery"))
    }

    @Test("/dev/vfio/5 open in a QEMU libvirt does not know: held by that pid, named, through its group")
    func openGroupFile() async {
        let host = Host()
        host.bus.sysfs.addProcess(4242, command: "qemu-system-x86", openFiles: [host.regularFile, "/dev/zero", "/dev/null"])
        host.bus.sysfs.addProcess(77, command: "bash", openFiles: ["/dev/zero"])
        let verdict = await host.check.holders(of: card)
        #expect(heldBy(verdict) == [.process(pid: 4242, command: "qemu-system-x86", device: "/dev/vfio/5", functions: [f0, f1])])
        #expect(verdict.description
            == "0000:01:00.0, 0000:01:00.1 are held open by pid 4242 (qemu-system-x86) through /dev/vfio/5: stop that process first")
        #expect(heldBy(await host.check.holders(of: [f1])).first?.description.hasPrefix("0000:01:00.1 is held open by pid 4242") == true)
    }

    @Test("a function's own VFIO device (Linux 6.6 and later, /dev/vfio/devices/vfioN) open: held too")
    func openDeviceFile() async {
        let host = Host(vfioGroup: false)
        host.bus.sysfs.writeFileCreatingDirectories("bus/pci/devices/0000:01:00.1/vfio-dev/vfio0/dev", "1:3\n")
        host.bus.sysfs.addProcess(4242, command: "qemu-kvm", openFiles: ["/dev/null"])
        #expect(heldBy(await host.check.holders(of: card))
            == [.process(pid: 4242, command: "qemu-kvm", device: "/dev/vfio/devices/vfio0", functions: [f1])])
    }

    @Test("a process whose open files cannot be read: unknown, naming the pid and what the agent lacks")
    func unreadableProcess() async {
        let host = Host()
        host.bus.sysfs.addProcess(4242, command: "qemu-system-x86", openFiles: ["/dev/null"])
        host.bus.failReads(of: "proc/4242/fd", with: .permissionDenied)
        let verdict = await host.check.holders(of: card)
        guard case .unknown(let reason) = verdict else {
            Issue.record("expected unknown, got \(verdict)")
            return
        }
        #expect(reason.contains("cannot read the open files of pid 4242 (qemu-system-x86): Permission denied"))
        #expect(reason.contains("CAP_SYS_PTRACE"))
    }

    @Test("an fd that cannot be followed makes its process unknown too")
    func unreadableFileDescriptor() async {
        let host = Host()
        host.bus.sysfs.addProcess(4242, command: "qemu-system-x86", openFiles: ["/dev/zero", "/dev/null"])
        host.bus.failReads(of: "proc/4242/fd/0", with: .permissionDenied)
        guard case .unknown(let reason) = await host.check.holders(of: card) else {
            Issue.record("expected unknown")
            return
        }
        #expect(reason.contains("pid 4242"))
    }

    @Test("a guest that holds the card outweighs a process that cannot be read: the user learns what to do")
    func knownHolderWins() async {
        let host = Host()
        await host.hypervisor.define("fpga-dev", state: .paused)
        await host.hypervisor.hold(f0, in: "fpga-dev")
        host.bus.sysfs.addProcess(4242, command: "qemu-system-x86", openFiles: ["/dev/null"])
        host.bus.failReads(of: "proc/4242/fd", with: .permissionDenied)
        #expect(heldBy(await host.check.holders(of: card)) == [.guest(GuestName("fpga-dev")!, state: .paused, functions: [f0])])
    }

    @Test("a guest's own QEMU has the group open too: the guest is named, not its process again")
    func guestNotNamedTwice() async {
        let host = Host()
        await host.hypervisor.define("fpga-dev", state: .running)
        await host.hypervisor.hold(f0, in: "fpga-dev")
        await host.hypervisor.hold(f1, in: "fpga-dev")
        host.bus.sysfs.addProcess(4242, command: "qemu-system-x86", openFiles: ["/dev/null"])
        let verdict = await host.check.holders(of: card)
        #expect(heldBy(verdict) == [.guest(GuestName("fpga-dev")!, state: .running, functions: [f0, f1])])
        #expect(!verdict.description.contains("pid"))
    }

    @Test("libvirt unreachable but a process holds the group: held by that process, which the user can act on")
    func processWhileLibvirtIsAway() async {
        let host = Host()
        await host.hypervisor.setReachable(false)
        host.bus.sysfs.addProcess(4242, command: "qemu-system-x86", openFiles: ["/dev/null"])
        #expect(heldBy(await host.check.holders(of: card)).count == 1)
    }

    @Test("a process that exits during the scan holds nothing and is no error")
    func processGone() async {
        let host = Host()
        host.bus.sysfs.addProcess(4242, command: "qemu-system-x86", openFiles: ["/dev/null"])
        host.bus.failReads(of: "proc/4242/fd", with: .noSuchFileOrDirectory)
        #expect(await host.check.holders(of: card) == .free)
    }

    @Test("no VFIO file registered for the functions (the card on its host driver): /proc is not read at all")
    func noVFIOFile() async {
        let host = Host(vfioGroup: false)
        host.bus.failReads(of: "proc", with: .permissionDenied)
        #expect(await host.check.holders(of: card) == .free)

        host.bus.sysfs.addVFIOGroup("5", device: "1:3")
        guard case .unknown(let reason) = await host.check.holders(of: card) else {
            Issue.record("an unlistable /proc with a VFIO group present must be unknown")
            return
        }
        #expect(reason.contains("cannot list the processes"))
    }

    @Test("an IOMMU group that cannot be read, or a device number that makes no sense: unknown")
    func unreadableSysfs() async {
        let host = Host()
        host.bus.failReads(of: "bus/pci/devices/0000:01:00.0/iommu_group", with: .permissionDenied)
        host.bus.sysfs.writeFile("class/vfio/5/dev", "garbage\n")
        guard case .unknown(let reason) = await host.check.holders(of: card) else {
            Issue.record("expected unknown")
            return
        }
        #expect(reason.contains("class/vfio/5/dev holds no device number"))
    }
}
