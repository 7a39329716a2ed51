import InMemoryLogging
import Logging
import PassthroughAgent
import PassthroughCore
import PassthroughSystemd
import PassthroughTestSupport
import Testing

/// The BAR check and the link check after a reflash, in the daemon on the emulated bus: a new bitstream
/// whose BAR 2 (256 MiB, 64-bit prefetchable) is bigger than the window of the root port above it.
@Suite("BAR check and link health after a re-enumeration", .serialized)
struct BARCheckDaemonTests {
    static let card = "0000:01:00.0"
    static let bigBitstream = [EmulatedBAR(0, size: 1 << 20), EmulatedBAR(2, size: 256 << 20, .prefetchableMemory, is64Bit: true)]
    static let fix = "add `pci=realloc` or `pci=hpmmioprefsize=256M` to the kernel command line"

    /// The re-enumeration the escalation makes: the card's function, then its port, removed; the host
    /// bridge's bus rescanned (a root port's parent).
    static let escalation = ["bus/pci/devices/0000:01:00.0/remove", "bus/pci/devices/0000:00:01.0/remove"]

    @Test("1. BAR 2 unassigned after a reflash; re-enumerating from above the port places it: bound and attached, nothing to tell")
    func escalationFixesIt() async throws {
        let rig = try await ReflashRig()
        defer { rig.loop.cancel() }
        rig.newBitstreamOnRescan(Self.bigBitstream, tooBigForThePort: [2], windowResizable: true)

        try await rig.reflash()
        try await waitUntil("back in its guest") { await rig.hypervisor.liveHostdevs(of: "fpga-dev") == [ReflashRig.function] }
        #expect(rig.bus.sysfs.driver(of: Self.card) == "vfio-pci")
        #expect(Array(rig.removals.dropFirst()) == Self.escalation)
        #expect(rig.bus.writes.last { $0.path.hasSuffix("rescan") }?.path == "bus/pci/rescan")
        #expect(rig.onBus(PCIAddress(ReflashRig.port)!))
        #expect(rig.notifications(.barsUnassigned).isEmpty)
        try await waitUntil("converged") { await rig.supervisor.summary == "u200: attached to fpga-dev" }
        // What was tried is forgotten once the BARs fit: a later bitstream gets its own try.
        #expect(!rig.bus.sysfs.exists("run/facts/u200"))
    }

    @Test("1b. the kernel re-enumerated it by itself (a hotplug slot after the FPGA came back): the same check on udev's add, same outcome")
    func kernelHotplug() async throws {
        let rig = try await ReflashRig()
        defer { rig.loop.cancel() }
        rig.newBitstreamOnRescan(Self.bigBitstream, tooBigForThePort: [2], windowResizable: true)
        // pciehp: the old pci_dev (and the guest's hostdev) goes, a new one comes, xdma grabs it; the kernel's
        // hot-add found no room in the port's window for BAR 2.
        await rig.hypervisor.unplug(ReflashRig.function, from: "fpga-dev")
        rig.bus.sysfs.removeFunction(Self.card)
        ReflashRig.plugCard(rig.bus.sysfs, id: "10ee:903f")
        rig.bus.setBARs(Self.card, Self.bigBitstream, .assigned(base: 0xE000_0000), except: [2])
        await rig.added()

        try await waitUntil("back in its guest") { await rig.hypervisor.liveHostdevs(of: "fpga-dev") == [ReflashRig.function] }
        #expect(rig.removals == Self.escalation)
        #expect(rig.bus.sysfs.driver(of: Self.card) == "vfio-pci")
        #expect(rig.notifications(.barsUnassigned).isEmpty)
    }

    @Test("2. the escalation does not place it: neither bound nor attached, told once with the fix, shown in status; no second try on another event or a restart")
    func escalationDoesNotFixIt() async throws {
        let rig = try await ReflashRig()
        defer { rig.loop.cancel() }
        rig.newBitstreamOnRescan(Self.bigBitstream, tooBigForThePort: [2], windowResizable: false)

        try await rig.reflash()
        try await waitUntil("told") { !rig.notifications(.barsUnassigned).isEmpty }
        let told = try #require(rig.notifications(.barsUnassigned).first)
        #expect(told.level == .error)
        #expect("\(told.message)".contains("u200: BAR 2 unassigned (256M): not bound to vfio-pci nor attached to fpga-dev; "
            + "still unassigned after re-enumerating it below its port's parent. Fix: \(Self.fix)"))
        #expect("\(told.message)".contains("Above 4G decoding"))
        #expect(Array(rig.removals.dropFirst()) == Self.escalation)
        #expect(rig.bus.sysfs.driver(of: Self.card) == "xdma")
        #expect(await rig.hypervisor.liveHostdevs(of: "fpga-dev").isEmpty)
        let summary = await rig.supervisor.summary
        #expect(summary.hasPrefix("u200: BAR 2 unassigned (256M); not given to fpga-dev (still unassigned after re-enumerating"))
        #expect(summary.contains("fix: \(Self.fix)"))
        #expect(await rig.supervisor.state(of: ReflashRig.card)?.statusWord == "bars-unassigned")

        // Another hot-add event, then a restart: looked at again, neither re-enumerated nor told again.
        let removals = rig.removals.count
        await rig.added()
        try await waitUntil("looked at again") { await !rig.supervisor.isDirty(ReflashRig.card) }
        try await Task.sleep(for: .milliseconds(200))
        let restarted = await rig.restarted()
        defer { restarted.loop.cancel() }
        try await waitUntil("restarted and looked") { await restarted.supervisor.summary.hasPrefix("u200: BAR 2 unassigned") }
        #expect(rig.removals.count == removals)
        #expect(rig.notifications(.barsUnassigned).count == 1)
        #expect(restarted.notifications(.barsUnassigned).isEmpty)
        #expect(rig.bus.sysfs.driver(of: Self.card) == "xdma")
    }

    @Test("3. something else below the port: no escalation, told why and the fix")
    func strangerBelowThePort() async throws {
        let rig = try await ReflashRig()
        defer { rig.loop.cancel() }
        rig.newBitstreamOnRescan(Self.bigBitstream, tooBigForThePort: [2], windowResizable: true, stranger: "0000:01:01.0")

        try await rig.reflash()
        try await waitUntil("told") { !rig.notifications(.barsUnassigned).isEmpty }
        let told = try #require(rig.notifications(.barsUnassigned).first)
        #expect("\(told.message)".contains(
            "not re-enumerated: 0000:01:01.0 is below 0000:00:01.0 too, and would go with it. Fix: \(Self.fix)"))
        #expect(rig.removals == ["bus/pci/devices/0000:01:00.0/remove"])   // the --prepare only
        #expect(rig.onBus(PCIAddress("0000:01:01.0")!))
        #expect(rig.bus.sysfs.driver(of: Self.card) == "xdma")
        #expect(await rig.hypervisor.liveHostdevs(of: "fpga-dev").isEmpty)
    }

    @Test("3b. the port's removal fails half-way: the whole bus is rescanned so the card is not left off it; the failure is told, and so is the BAR")
    func escalationFailsHalfWay() async throws {
        let rig = try await ReflashRig()
        defer { rig.loop.cancel() }
        rig.newBitstreamOnRescan(Self.bigBitstream, tooBigForThePort: [2], windowResizable: true)
        rig.bus.failWrites(to: "bus/pci/devices/\(ReflashRig.port)/remove", with: .resourceBusy)
        try await rig.reflash()

        try await waitUntil("told") { !rig.notifications(.barsUnassigned).isEmpty }
        let failed = try #require(rig.notifications(.stepFailed).first)
        #expect("\(failed.message)".hasPrefix("u200: re-enumerating it from above 0000:00:01.0 failed"))
        #expect(rig.bus.writes.last { $0.path.hasSuffix("rescan") }?.path == "bus/pci/rescan")
        #expect(rig.onBus())
        #expect(await rig.hypervisor.liveHostdevs(of: "fpga-dev").isEmpty)
    }

    @Test("1c. a bitstream whose BARs all fit: back in its guest, and its config space never written (its unimplemented BARs, which read zero, are not sized under the host driver)")
    func healthyCardIsNotSized() async throws {
        let rig = try await ReflashRig()
        defer { rig.loop.cancel() }
        // BARs 1, 4 and 5 are not implemented: their `resource` lines are zero, as an unplaced BAR's would be.
        rig.newBitstreamOnRescan(Self.bigBitstream, tooBigForThePort: [], windowResizable: false)

        try await rig.reflash()
        try await waitUntil("back in its guest") { await rig.hypervisor.liveHostdevs(of: "fpga-dev") == [ReflashRig.function] }
        #expect(rig.bus.configWrites.filter { $0.path.hasPrefix("bus/pci/devices/\(Self.card)/") }.isEmpty)
        #expect(rig.notifications(.barsUnassigned).isEmpty)
    }

    @Test("4. the link comes back slower than before: a warning naming before and after, the daemon's status and `status`'s LINK column say so; the card is still lent")
    func degradedLink() async throws {
        let rig = try await ReflashRig()
        defer { rig.loop.cancel() }
        rig.bus.setLink(ReflashRig.port, current: ("8.0 GT/s PCIe", 16), maximum: ("8.0 GT/s PCIe", 16))
        rig.bus.setLink(Self.card, current: ("8.0 GT/s PCIe", 16), maximum: ("8.0 GT/s PCIe", 16))
        // Seen healthy once (a hot-add event makes it look again): that is "before".
        await rig.added()
        try await waitUntil("healthy link remembered") { rig.bus.sysfs.exists("run/facts/u200") }
        rig.newBitstreamOnRescan([EmulatedBAR(0, size: 1 << 20)], tooBigForThePort: [], windowResizable: false,
                                 link: ("2.5 GT/s PCIe", 16))

        try await rig.reflash()
        try await waitUntil("warned") { !rig.notifications(.linkDegraded).isEmpty }
        let warning = try #require(rig.notifications(.linkDegraded).first)
        #expect(warning.level == .warning)
        #expect("\(warning.message)" == "u200: its link came back degraded: 8 GT/s x16 before, 2.5 GT/s x16 now")
        try await waitUntil("back in its guest") { await rig.hypervisor.liveHostdevs(of: "fpga-dev") == [ReflashRig.function] }
        try await waitUntil("status says so") {
            await rig.supervisor.summary == "u200: attached to fpga-dev; link degraded: 8 GT/s x16 before, 2.5 GT/s x16 now"
        }
        let status = try CardStatus.all(config: rig.config, reader: rig.bus.reader)
        #expect(status[0].link == "2.5 GT/s x16 (can do 8 GT/s x16)")
        #expect(StatusTable.render(status).contains("fpga-dev  2.5 GT/s x16 (can do 8 GT/s x16)"))
        #expect(rig.notifications(.linkDegraded).count == 1)
    }

    @Test("5. dry run: the escalation is only said, and nothing is written (no removal, no rescan, no config-space sizing, no state)")
    func dryRun() async throws {
        let rig = try await ReflashRig(dryRun: true)
        defer { rig.loop.cancel() }
        // BAR 0 sized but unclaimed (IORESOURCE_UNSET, seen without sizing); BAR 2's line zeroed (seen only by sizing).
        rig.bus.setBARs(Self.card, [EmulatedBAR(0, size: 32 << 20)], .unset)
        await rig.added()
        try await waitUntil("planned") { rig.logs.entries.contains { $0.metadata["STEP"] == "reassign-bars" } }
        let planned = try #require(rig.logs.entries.first { "\($0.message)".hasPrefix("plan: u200: remove it and 0000:00:01.0") })
        #expect("\(planned.message)".contains("BAR 0 unassigned (32M): the kernel found no room below 0000:00:01.0"))
        #expect(rig.bus.writes.isEmpty)
        #expect(rig.bus.configWrites.isEmpty)
        #expect(!rig.bus.sysfs.exists("run/facts"))
    }
}

extension ReflashRig {
    /// `reflash --prepare`, then `--finish`: the FPGA programmed in between, as a person does it.
    func reflash() async throws {
        _ = try await supervisor.reflash(Self.card, .prepare)
        _ = try await supervisor.reflash(Self.card, .finish)
    }

    /// The FPGA comes back on the next rescan with a bitstream whose BARs are `bars`. A rescan below the
    /// port (the port stays) leaves those in `tooBigForThePort` unplaced, as the kernel does with windows it
    /// does not resize; one from above (the port itself re-enumerated) places them when `windowResizable`.
    func newBitstreamOnRescan(_ bars: [EmulatedBAR], tooBigForThePort: Set<Int>, windowResizable: Bool, stranger: String? = nil,
                              link: (speed: String, width: Int)? = nil) {
        bus.onRescan { [bus] sysfs in
            let fromAbove = !sysfs.exists("bus/pci/devices/\(Self.port)")
            if fromAbove {
                sysfs.addFunction(Self.port, id: "8086:1901", classCode: 0x060400, driver: "pcieport", iommuGroup: 1,
                                  subsystem: nil, config: ConfigSpaceImage.rootPort().bytes)
                bus.setLinkActive(Self.port, true)
                bus.setLink(Self.port, current: ("8.0 GT/s PCIe", 16), maximum: ("8.0 GT/s PCIe", 16))
            }
            guard !sysfs.exists("bus/pci/devices/\(Self.function)") else { return }
            Self.plugCard(sysfs, id: "10ee:903f")
            bus.setBARs("\(Self.function)", bars, .assigned(base: 0xE000_0000),
                        except: fromAbove && windowResizable ? [] : tooBigForThePort)
            if let link { bus.setLink("\(Self.function)", current: link, maximum: ("8.0 GT/s PCIe", 16)) }
            if let stranger { sysfs.addFunction(stranger, id: "1234:5678", driver: nil, iommuGroup: 9, below: Self.port) }
        }
    }
}
