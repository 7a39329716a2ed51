import InMemoryLogging
import Logging
import PassthroughAgent
import PassthroughConfig
import PassthroughCore
import PassthroughLibvirt
import PassthroughSysfs
import PassthroughSystemd
import PassthroughTestSupport
import PassthroughUdev
import Testing

/// An Alveo below a root port whose config space has a PCI Express capability, the guest running,
/// and the supervisor's loop going: what a reflash looks like from the daemon's side.
private struct ReflashRig {
    let bus: EmulatedPCIBus
    let hypervisor: FakeHypervisor
    let logs = InMemoryLogHandler()
    let supervisor: CardSupervisor
    let store: ReflashStateStore
    let options: CardSupervisor.Options
    let config: AgentConfig
    let loop: Task<Void, Never>

    static let port = "0000:00:01.0"
    static let function = PCIAddress("0000:01:00.0")!

    init(extraConfig: String = "", dryRun: Bool = false) async throws {
        let sysfs = FakeSysfs()
        bus = EmulatedPCIBus(sysfs)
        bus.loadDriver("pcieport")
        bus.loadDriver("xdma", claiming: ["10ee:903f", "10ee:9038"])
        bus.loadDriver("vfio-pci")
        sysfs.addFunction(Self.port, id: "8086:1901", classCode: 0x060400, driver: "pcieport", iommuGroup: 1,
                          subsystem: nil, config: ConfigSpaceImage.rootPort().bytes)
        bus.setLinkActive(Self.port, true)
        Self.plugCard(sysfs, id: "10ee:903f")
        hypervisor = FakeHypervisor(bus: bus)
        await hypervisor.define("fpga-dev", state: .running)
        let config = try ConfigLoader.parse("""
            [[card]]
            name = "u200"
            address = "0000:01:00"
            ids = ["10ee:903f", "10ee:9038"]
            guest = "fpga-dev"
            recovery-timeout = "2s"
            \(extraConfig)
            """, path: "config.toml")
        store = ReflashStateStore(directory: sysfs.root.appending("run/cards"))
        var options = CardSupervisor.Options.fast
        options.reflashStore = store
        options.holderRecheck = .milliseconds(20)
        options.recoveryPacing = RecoveryPacing(firstPoll: .milliseconds(5), maximumPoll: .milliseconds(50),
                                                resetHold: .milliseconds(1), resetSettle: .milliseconds(1))
        options.detachTimeout = .milliseconds(200)
        options.dryRun = dryRun
        self.options = options
        self.config = config
        let supervisor = CardSupervisor(config: config, host: HostEnvironment(sysfsRoot: sysfs.root, io: bus),
                                        hypervisor: hypervisor, logger: Self.logger(logs), options: options)
        self.supervisor = supervisor
        loop = Task { await supervisor.run() }
        await supervisor.markAllDirty()
        if !dryRun {
            try await waitUntil("attached at start") { await supervisor.summary == "u200: attached to fpga-dev" }
        }
    }

    private init(restarting previous: ReflashRig) async {
        bus = previous.bus
        hypervisor = previous.hypervisor
        store = previous.store
        options = previous.options
        config = previous.config
        let supervisor = CardSupervisor(config: config, host: HostEnvironment(sysfsRoot: bus.sysfs.root, io: bus),
                                        hypervisor: hypervisor, logger: Self.logger(logs), options: options)
        self.supervisor = supervisor
        await supervisor.restoreLeftovers()
        loop = Task { await supervisor.run() }
        await supervisor.markAllDirty()
    }

    /// The agent killed (or stopped) and started again on the same host and state directory.
    func restarted() async -> ReflashRig {
        loop.cancel()
        return await ReflashRig(restarting: self)
    }

    static func logger(_ logs: InMemoryLogHandler) -> Logger {
        var handler = logs
        handler.logLevel = .debug
        return Logger(label: "test") { _ in handler }
    }

    /// The card as the kernel enumerates it: a new pci_dev, grabbed by xdma at once.
    static func plugCard(_ sysfs: FakeSysfs, id: String) {
        let pciID = PCIID(id)!
        sysfs.addFunction("0000:01:00.0", id: id, driver: "xdma", iommuGroup: 5, below: port,
                          config: ConfigSpaceImage.endpoint(vendor: pciID.vendor, device: pciID.device).bytes)
    }

    /// The FPGA comes back with `id` when the port is rescanned.
    func cardReturnsOnRescan(as id: String) {
        bus.onRescan { [bus] sysfs in
            bus.restoreLink("0000:01:00")
            if sysfs.driver(of: "0000:01:00.0") == nil, !sysfs.exists("bus/pci/devices/0000:01:00.0") {
                Self.plugCard(sysfs, id: id)
            }
        }
    }

    func notifications(_ kind: NotificationKind) -> [InMemoryLogHandler.Entry] {
        logs.entries.filter { $0.metadata[LogMetadataKey.messageID] == .string(kind.messageID.rawValue) }
    }

    func portBits() throws -> (serr: Bool, fatal: Bool) {
        let port = ConfigSpace(address: PCIAddress(Self.port)!, layout: bus.sysfs.layout, io: bus)
        return (try port.isSet(.serrEnable), try port.isSet(.fatalErrorReporting))
    }
}

private func waitUntil(_ what: String, timeout: Duration = .seconds(20), _ condition: () async -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if await condition() { return }
        try await Task.sleep(for: .milliseconds(10))
    }
    Issue.record("timed out waiting: \(what)")
}

@Suite("Reflash survival in the daemon")
struct ReflashDaemonTests {
    @Test("AER FAILED_RECOVERY (no hotplug): detach, remove, rescan, rebind and re-attach, no human action")
    func aerFailedRecovery() async throws {
        let rig = try await ReflashRig()
        defer { rig.loop.cancel() }
        rig.cardReturnsOnRescan(as: "10ee:9038")
        rig.bus.dropLink("0000:01:00")   // a real FAILED_RECOVERY: the device no longer answers
        let change = UdevEvent(action: .change, isColdplug: false, syspath: "/sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0",
                               address: ReflashRig.function, id: PCIID("10ee:903f"), driver: DriverName("vfio-pci"),
                               errorEvent: .failedRecovery, deviceOnline: false, sequenceNumber: nil)
        await rig.supervisor.handle(.device(change))
        try await waitUntil("re-attached with the new ID") {
            rig.bus.sysfs.driver(of: "0000:01:00.0") == "vfio-pci" && rig.notifications(.cardAttached).count >= 2
        }
        #expect(rig.notifications(.cardLost).count == 1)
        #expect(await rig.hypervisor.detachCalls == [ReflashRig.function])
        #expect(rig.bus.rescanCount >= 1)
        #expect(await rig.hypervisor.liveHostdevs(of: "fpga-dev") == [ReflashRig.function])
        #expect(rig.notifications(.cardIDChanged).count == 1)
    }

    @Test("link lost (all-ones reads, the host has neither hotplug nor AER): recovered the same way")
    func linkLost() async throws {
        let rig = try await ReflashRig()
        defer { rig.loop.cancel() }
        rig.bus.dropLink("0000:01:00")
        #expect(LinkProbe(layout: rig.bus.sysfs.layout, io: rig.bus).probe(ReflashRig.function) == .lost(.allOnes))
        rig.cardReturnsOnRescan(as: "10ee:903f")
        await rig.supervisor.cardLost(CardName("u200")!, reason: "link watch: all-ones")
        try await waitUntil("re-attached") { rig.notifications(.cardAttached).count >= 2 }
        #expect(rig.notifications(.cardLost).count == 1)
        #expect(rig.bus.sysfs.driver(of: "0000:01:00.0") == "vfio-pci")
    }

    @Test("a card that never comes back: a clear notification after recovery-timeout, and the host is fine")
    func neverReturns() async throws {
        let rig = try await ReflashRig()
        defer { rig.loop.cancel() }
        await rig.supervisor.cardLost(CardName("u200")!, reason: "test")
        try await waitUntil("gave up") { !rig.notifications(.recoveryGaveUp).isEmpty }
        let gaveUp = try #require(rig.notifications(.recoveryGaveUp).first)
        #expect(gaveUp.metadata[LogMetadataKey.card] == "u200")
        #expect(await rig.supervisor.summary == "u200: absent")
        // Still watching: the card coming back later (a hotplug add) is taken back as usual.
        ReflashRig.plugCard(rig.bus.sysfs, id: "10ee:903f")
        await rig.supervisor.handle(.device(UdevEvent(action: .add, isColdplug: false, syspath: "/x", address: ReflashRig.function,
                                                      id: PCIID("10ee:903f"), driver: nil, errorEvent: nil, deviceOnline: nil,
                                                      sequenceNumber: nil)))
        try await waitUntil("re-attached after it returned") {
            await rig.hypervisor.liveHostdevs(of: "fpga-dev") == [ReflashRig.function]
        }
    }

    @Test("reflash --prepare / --finish with the guard: bits cleared while off the bus, restored after")
    func prepareAndFinish() async throws {
        let rig = try await ReflashRig(extraConfig: "reflash-guard = true")
        defer { rig.loop.cancel() }
        #expect(try rig.portBits() == (true, true))
        let prepared = try await rig.supervisor.reflash(CardName("u200")!, .prepare)
        #expect(prepared.contains("reflash u200 --finish"))
        #expect(!rig.bus.sysfs.exists("bus/pci/devices/0000:01:00.0"))
        #expect(try rig.portBits() == (false, false))
        #expect(await rig.hypervisor.liveHostdevs(of: "fpga-dev").isEmpty)
        #expect(await rig.supervisor.summary == "u200: off the bus for a reflash")
        #expect(rig.notifications(.cardVanished).isEmpty)

        rig.cardReturnsOnRescan(as: "10ee:9038")
        let finished = try await rig.supervisor.reflash(CardName("u200")!, .finish)
        #expect(finished.hasPrefix("u200 is back: 0000:01:00.0 10ee:9038"))
        #expect(try rig.portBits() == (true, true))
        try await waitUntil("re-attached") { await rig.hypervisor.liveHostdevs(of: "fpga-dev") == [ReflashRig.function] }
    }

    @Test("link-watch follows a reload: turned on by SIGHUP, the next dead link is recovered")
    func linkWatchReload() async throws {
        let rig = try await ReflashRig()
        defer { rig.loop.cancel() }
        rig.bus.dropLink("0000:01:00")
        try await Task.sleep(for: .milliseconds(200))
        #expect(rig.notifications(.cardLost).isEmpty)
        rig.cardReturnsOnRescan(as: "10ee:903f")
        let watched = try ConfigLoader.parse("""
            [[card]]
            name = "u200"
            address = "0000:01:00"
            ids = ["10ee:903f", "10ee:9038"]
            guest = "fpga-dev"
            recovery-timeout = "2s"
            link-watch = "100ms"
            """, path: "config.toml")
        await rig.supervisor.reload(watched)
        try await waitUntil("lost, recovered and re-attached") {
            rig.notifications(.cardLost).count == 1 && rig.notifications(.cardAttached).count >= 2
        }
        #expect(rig.bus.sysfs.driver(of: "0000:01:00.0") == "vfio-pci")
    }

    @Test("status over the control socket's handler: the daemon's live view of each card")
    func liveStatus() async throws {
        let rig = try await ReflashRig()
        defer { rig.loop.cancel() }
        let response = await AgentService.answer(.status(card: nil), supervisor: rig.supervisor)
        #expect(response.ok)
        #expect(response.cards == [ControlCardStatus(name: "u200", state: "u200: attached to fpga-dev")])
        let unknown = await AgentService.answer(.reflashPrepare(card: CardName("u250")!), supervisor: rig.supervisor)
        #expect(!unknown.ok)
        #expect(unknown.error?.contains("no card named u250") == true)
    }
}
