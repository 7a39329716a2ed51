import InMemoryLogging
import PassthroughCore
import PassthroughThreads
@testable import PassthroughUdev
import SystemPackage
import Testing

/// The monitor loop against a scripted source: the overflow and receive-error paths that
/// umockdev cannot provoke. Runs everywhere, no libudev involved.
@Suite("Monitor loop with a scripted source")
struct MonitorLoopTests {
    private static let alveo = UdevDeviceRecord(
        syspath: "/sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0", sysname: "0000:01:00.0",
        driver: "xdma", properties: ["PCI_ID": "10EE:903F"])
    private static let bogus = UdevDeviceRecord(syspath: "/sys/devices/pci0000:00/bogus", sysname: "bogus")

    /// Runs the loop on the calling thread until the script is used up, and returns every event.
    private func run(
        devices: [UdevDeviceRecord], script: [UdevSession.Received], logs: InMemoryLogHandler = InMemoryLogHandler()
    ) async throws -> [UdevMonitorEvent] {
        let wakeup = try Wakeup()
        let (stream, continuation) = AsyncStream.makeStream(of: UdevMonitorEvent.self)
        let context = MonitorContext(logger: logs.logger(), continuation: continuation, wakeup: wakeup)
        let source = try ScriptedSource(devices: devices, script: script, wakeup: wakeup)
        MonitorThread(session: source, context: context).loop()
        continuation.finish()
        var events: [UdevMonitorEvent] = []
        for await event in stream { events.append(event) }
        return events
    }

    @Test("socket overflow: resync, the pending uevents, then a fresh snapshot")
    func overflow() async throws {
        var hot = Self.alveo
        hot.action = "add"
        hot.sequenceNumber = 7
        let logs = InMemoryLogHandler()
        let events = try await run(devices: [Self.alveo], script: [.failed(.noBufferSpace), .device(hot), .drained], logs: logs)

        let coldplug = try Self.alveo.decode(isColdplug: true).get()
        let hotplug = try hot.decode(isColdplug: false).get()
        #expect(events == [
            .device(coldplug), .coldplugComplete(count: 1),
            .resync(.receiveBufferOverflow), .device(hotplug),
            .device(coldplug), .coldplugComplete(count: 1),
        ])
        #expect(logs.contains("ENOBUFS"))
    }

    @Test("an undecodable device during a snapshot is reported but starts no new snapshot")
    func unparsableDuringSnapshot() async throws {
        let events = try await run(devices: [Self.alveo, Self.bogus], script: [])
        #expect(events.count == 3)
        #expect(events.last == .coldplugComplete(count: 1))
        #expect(events.contains(.resync(.unparsableDevice(
            UdevParseError(syspath: Self.bogus.syspath, field: "PCI_SLOT_NAME", value: "bogus")))))
    }

    @Test("receive errors resync each time, and the monitor gives up after too many in a row")
    func repeatedReceiveFailures() async throws {
        let limit = MonitorThread<ScriptedSource>.maximumConsecutiveReceiveFailures
        let events = try await run(devices: [Self.alveo], script: Array(repeating: .failed(.ioError), count: limit + 5))

        #expect(events.filter { $0 == .resync(.receiveFailed(.ioError)) }.count == limit)
        #expect(events.filter { if case .coldplugComplete = $0 { true } else { false } }.count == limit)
        #expect(events.last == .failed(UdevError(.receive, errno: .ioError)))
    }
}

/// Plays back `script` one `receive()` at a time on an always-readable fd; when the script is
/// used up (or after a safety limit) it requests shutdown, so the loop ends.
private final class ScriptedSource: MonitorSource {
    private let readable: Wakeup
    private let wakeup: Wakeup
    private let devices: [UdevDeviceRecord]
    private var script: [UdevSession.Received]
    private var calls = 0

    init(devices: [UdevDeviceRecord], script: [UdevSession.Received], wakeup: Wakeup) throws {
        readable = try Wakeup()
        readable.nudge()   // never drained: readable for good
        self.devices = devices
        self.script = script
        self.wakeup = wakeup
    }

    var monitorFD: CInt { readable.descriptor }

    func receive() -> UdevSession.Received {
        calls += 1
        guard !script.isEmpty, calls < 1000 else {
            wakeup.shutdown()
            return .drained
        }
        return script.removeFirst()
    }

    func enumeratePCI(_ body: (UdevDeviceRecord) -> Bool) throws(UdevError) -> Bool {
        for device in devices {
            guard body(device) else { return false }
        }
        return true
    }
}
