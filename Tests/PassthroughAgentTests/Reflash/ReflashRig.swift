#if canImport(Glibc)
import Glibc
#endif
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
import Synchronization
import Testing

/// An Alveo below a root port whose config space has a PCI Express capability, the guest running,
/// and the supervisor's loop going: what a reflash looks like from the daemon's side.
///
/// With `secondCard`, another card ("u250", 0000:02:00.0 below root port 00:02.0) lent to `secondGuest`:
/// "fpga-test", shut off at start (the second card sits on the host driver), or "fpga-dev" beside u200.
struct ReflashRig {
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
    static let card = CardName("u200")!
    static let secondPort = "0000:00:02.0"
    static let secondFunction = PCIAddress("0000:02:00.0")!
    static let secondCard = CardName("u250")!

    private static func secondCardConfig(guest: String) -> String {
        """
        [[card]]
        name = "u250"
        address = "0000:02:00"
        guest = "\(guest)"
        """
    }

    /// - Parameters:
    ///   - extraConfig: more keys for u200's `[[card]]` table.
    ///   - recoveryTimeout: u200's `recovery-timeout`: short, so a card that never returns is given up soon.
    ///   - tune: options on top of the rig's fast ones (small `aerGrace`, `stuckAfter`, …).
    init(extraConfig: String = "", recoveryTimeout: String = "2s", dryRun: Bool = false, secondCard: Bool = false,
         secondGuest: String = "fpga-test", tune: (inout CardSupervisor.Options) -> Void = { _ in }) async throws {
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
        if secondCard {
            sysfs.addFunction(Self.secondPort, id: "8086:1901", classCode: 0x060400, driver: "pcieport", iommuGroup: 2,
                              subsystem: nil, config: ConfigSpaceImage.rootPort().bytes)
            bus.setLinkActive(Self.secondPort, true)
            Self.plugCard(sysfs, id: "10ee:903f", at: Self.secondFunction, below: Self.secondPort, iommuGroup: 6)
            if secondGuest != "fpga-dev" { await hypervisor.define(secondGuest, state: .shutOff) }
        }
        let config = try Self.config(extraConfig, secondCard: secondCard, secondGuest: secondGuest, recoveryTimeout: recoveryTimeout)
        store = ReflashStateStore(directory: sysfs.root.appending("run/cards"))
        var options = CardSupervisor.Options.fast
        options.reflashStore = store
        options.holderRecheck = .milliseconds(20)
        options.recoveryPacing = RecoveryPacing(firstPoll: .milliseconds(5), maximumPoll: .milliseconds(50),
                                                resetHold: .milliseconds(1), resetSettle: .milliseconds(1))
        options.detachTimeout = .milliseconds(200)
        options.dryRun = dryRun
        tune(&options)
        self.options = options
        self.config = config
        let supervisor = CardSupervisor(config: config, host: bus.host, hypervisor: hypervisor,
                                        logger: logs.logger(), options: options)
        self.supervisor = supervisor
        loop = Task { await supervisor.run() }
        await supervisor.markAllDirty()
        if dryRun {
            try await waitUntil("first look") { await !supervisor.summary.contains("starting") }
        } else {
            try await waitUntil("attached at start") {
                let summary = await supervisor.summary
                let second = secondGuest == "fpga-dev" ? "u250: attached to fpga-dev" : "u250: on the host"
                return summary.hasPrefix("u200: attached to fpga-dev") && (!secondCard || summary.hasSuffix(second))
            }
        }
    }

    private init(restarting previous: ReflashRig, config: AgentConfig, dryRun: Bool) async {
        bus = previous.bus
        hypervisor = previous.hypervisor
        store = previous.store
        var options = previous.options
        options.dryRun = dryRun
        self.options = options
        self.config = config
        let supervisor = CardSupervisor(config: config, host: bus.host, hypervisor: hypervisor,
                                        logger: logs.logger(), options: options)
        self.supervisor = supervisor
        // As `run` does: a dry run puts nothing right, not even a previous run's leftovers.
        if !dryRun { await supervisor.restoreLeftovers() }
        loop = Task { await supervisor.run() }
        await supervisor.markAllDirty()
    }

    /// The agent stopped (its loop ended, its recoveries interrupted) and started again on the same
    /// host and state directory, optionally with another configuration, or as `run --dry-run`.
    func restarted(with config: AgentConfig? = nil, dryRun: Bool = false) async -> ReflashRig {
        loop.cancel()
        await loop.value
        return await ReflashRig(restarting: self, config: config ?? self.config, dryRun: dryRun)
    }

    /// The rig's configuration: the Alveo at 01:00 lent to fpga-dev, plus `extra` keys for it.
    static func config(_ extra: String = "", secondCard: Bool = false, secondGuest: String = "fpga-test",
                       recoveryTimeout: String = "2s") throws -> AgentConfig {
        try ConfigLoader.parse("""
            [[card]]
            name = "u200"
            address = "0000:01:00"
            ids = ["10ee:903f", "10ee:9038"]
            guest = "fpga-dev"
            recovery-timeout = "\(recoveryTimeout)"
            \(extra)
            \(secondCard ? secondCardConfig(guest: secondGuest) : "")
            """, path: "config.toml")
    }

    /// The card as the kernel enumerates it: a new pci_dev, grabbed by xdma at once.
    static func plugCard(_ sysfs: FakeSysfs, id: String, at address: PCIAddress = function, below port: String = port,
                         iommuGroup: Int = 5) {
        let pciID = PCIID(id)!
        sysfs.addFunction(address.description, id: id, driver: "xdma", iommuGroup: iommuGroup, below: port,
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

    /// The guarded bits of u200's root port: SERR# Enable and Fatal Error Reporting Enable.
    func portBits() throws -> (serr: Bool, fatal: Bool) {
        let port = bus.configSpace(PCIAddress(Self.port)!)
        return (try port.isSet(.serrEnable), try port.isSet(.fatalErrorReporting))
    }

    /// Every `remove` written, in order: what took functions off the bus.
    var removals: [String] {
        bus.writes.filter { $0.path.hasSuffix("/remove") }.map(\.path)
    }

    /// fpga-dev lost u200 (the loop attaches it again) and that attach hangs in libvirt until
    /// `hypervisor.unhang(.attach)`: a reconcile step in flight. `alongside`: more cards in the same pass.
    func attachInFlight(alongside others: [CardName] = []) async throws {
        await hypervisor.unplug(Self.function, from: "fpga-dev")
        await hypervisor.hang(.attach)
        await supervisor.markDirty([Self.card] + others)
        try await waitUntil("u200's attach is in flight") { await hypervisor.attachCalls.count == 2 }
    }

    func onBus(_ address: PCIAddress = function) -> Bool {
        bus.sysfs.exists("bus/pci/devices/\(address)")
    }

    /// Whether the card has a reflash record in the state directory (it is anything but placed).
    func hasStateFile(_ card: CardName = card) -> Bool {
        bus.sysfs.exists("run/cards/\(card)")
    }

    func reflashState(_ card: CardName = card) async -> ReflashState? {
        await supervisor.state(of: card)?.reflash.state
    }

    /// The reflash path is done with u200 and fpga-dev has it again.
    func isBackInItsGuest() async -> Bool {
        guard await reflashState() == .placed else { return false }
        return await hypervisor.liveHostdevs(of: "fpga-dev") == [Self.function]
    }

    /// Runs a reflash request that must be refused, and returns why.
    func refusal(_ request: CardSupervisor.ReflashRequest, of card: CardName = card,
                 sourceLocation: Testing.SourceLocation = #_sourceLocation) async -> CardSupervisor.ReflashRefused? {
        do {
            let answer = try await supervisor.reflash(card, request)
            Issue.record("expected a refusal, got: \(answer)", sourceLocation: sourceLocation)
        } catch let refused as CardSupervisor.ReflashRefused {
            return refused
        } catch {
            Issue.record("expected ReflashRefused, got \(error)", sourceLocation: sourceLocation)
        }
        return nil
    }

    /// An AER `change` uevent for u200's first function, as `pci_uevent_ers()` sends it.
    func aer(_ event: AERErrorEvent, online: Bool = false) async {
        await supervisor.handle(.device(UdevEvent(
            action: .change, isColdplug: false, syspath: "/sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0",
            address: Self.function, id: PCIID("10ee:903f"), driver: DriverName("vfio-pci"),
            errorEvent: event, deviceOnline: online, sequenceNumber: nil)))
    }

    /// A hotplug `add` of `address`, as udev reports a slot re-enumerating it.
    func added(_ address: PCIAddress = function, id: String = "10ee:903f") async {
        await supervisor.handle(.device(UdevEvent(
            action: .add, isColdplug: false, syspath: "/sys/devices/pci0000:00/0000:00:01.0/\(address)", address: address,
            id: PCIID(id), driver: nil, errorEvent: nil, deviceOnline: nil, sequenceNumber: nil)))
    }
}

/// Polls `condition` until it holds; records an issue (and returns) when it does not within `timeout`.
/// Generous: every test of the package starts at once, and a debug build's sysfs walks share two cores.
func waitUntil(_ what: String, timeout: Duration = .seconds(60), sourceLocation: Testing.SourceLocation = #_sourceLocation,
               _ condition: () async -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if await condition() { return }
        try await Task.sleep(for: .milliseconds(10))
    }
    Issue.record("timed out waiting: \(what)", sourceLocation: sourceLocation)
}

/// A door a blocking call (a sysfs write on a worker thread) waits at until the test opens it: a call
/// stuck in the kernel.
final class Gate: Sendable {
    private let isOpen = Mutex(false)

    /// Blocks the calling thread (never a task's: only call it where the product blocks anyway).
    func wait() {
        while !isOpen.withLock({ $0 }) { usleep(1_000) }
    }

    func open() { isOpen.withLock { $0 = true } }
}
