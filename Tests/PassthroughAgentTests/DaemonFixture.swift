import InMemoryLogging
import Logging
import PassthroughAgent
import PassthroughConfig
import PassthroughCore
import PassthroughLibvirt
import PassthroughSystemd
import PassthroughTestSupport
import PassthroughUdev

/// A host with one Alveo (0000:01:00, two functions on xdma), its guest in a fake libvirt, and the
/// supervisor under test, logging into memory.
struct DaemonFixture {
    let bus: EmulatedPCIBus
    let hypervisor: FakeHypervisor
    let logs = InMemoryLogHandler()
    let supervisor: CardSupervisor
    let config: AgentConfig

    static let alveo = """
        [[card]]
        name = "u200"
        address = "0000:01:00"
        ids = ["10ee:903f", "10ee:9038", "10ee:9048"]
        guest = "fpga-dev"
        """

    private init(config text: String, options: CardSupervisor.Options, waitingFor sources: Set<CardSupervisor.Source>) throws {
        bus = readyHost()
        hypervisor = FakeHypervisor(bus: bus)
        config = try ConfigLoader.parse(text, path: "config.toml")
        supervisor = CardSupervisor(config: config, host: bus.host, hypervisor: hypervisor, logger: logs.logger(),
                                    options: options, waitingFor: sources)
    }

    static func make(config text: String = DaemonFixture.alveo, guest: GuestState = .running,
                     options: CardSupervisor.Options = .fast,
                     waitingFor sources: Set<CardSupervisor.Source> = []) async throws -> DaemonFixture {
        let fixture = try DaemonFixture(config: text, options: options, waitingFor: sources)
        await fixture.hypervisor.define("fpga-dev", state: guest)
        return fixture
    }

    /// Everything looked at again, as after a resync.
    func pass() async {
        await supervisor.markAllDirty()
        await supervisor.pass()
    }

    func driver(_ address: String) -> String? { bus.sysfs.driver(of: address) }

    /// Notifications logged, by kind, in order.
    func notifications(_ kind: NotificationKind) -> [InMemoryLogHandler.Entry] {
        logs.entries.filter { $0.metadata[LogMetadataKey.messageID] == .string(kind.messageID.rawValue) }
    }

    func uevent(_ action: UdevAction, _ address: String, id: String? = nil, driver: String? = nil) -> UdevMonitorEvent {
        .device(UdevEvent(action: action, isColdplug: false, syspath: "/sys/devices/pci0000:00/0000:00:01.0/\(address)",
                          address: PCIAddress(address)!, id: id.flatMap(PCIID.init), driver: driver.flatMap(DriverName.init),
                          errorEvent: nil, deviceOnline: nil, sequenceNumber: nil))
    }
}

extension CardSupervisor.Options {
    /// No settling, millisecond backoff: tests do not wait for wall-clock policy.
    static var fast: CardSupervisor.Options {
        var options = CardSupervisor.Options()
        options.settle = .zero
        options.backoff = Backoff(initial: .milliseconds(10), multiplier: 2, cap: .milliseconds(40))!
        options.attachTimeout = .milliseconds(200)
        return options
    }
}
