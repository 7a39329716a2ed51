import Glibc
import InMemoryLogging
import PassthroughTestSupport
@testable import PassthroughUdev
import Testing

/// The monitor on the machine's real `/sys` and netlink socket. Opt-in, because what it sees
/// depends on the host: `PASSTHROUGH_UDEV_HOST_TEST=1 swift test ...` (without umockdev-wrapper).
enum HostSmoke {
    static var isEnabled: Bool {
        getenv("PASSTHROUGH_UDEV_HOST_TEST") != nil && !Umockdev.isPreloaded
    }
}

@Suite("UdevMonitor on the real host", .enabled(if: HostSmoke.isEnabled, "set PASSTHROUGH_UDEV_HOST_TEST=1 (without umockdev-wrapper) to run against the real /sys"))
struct HostSmokeTests {
    @Test("coldplug of the real PCI bus completes and shutdown joins")
    func coldplugAndShutdown() async throws {
        let logs = InMemoryLogHandler()
        let monitor = UdevMonitor(logger: logs.logger())
        let recorder = StreamRecorder(try monitor.start())
        let (before, count) = try await recorder.untilColdplugComplete()
        #expect(before.count == count, "unexpected non-device events: \(before)")
        for event in before {
            guard case .device(let device) = event else { continue }
            #expect(device.isColdplug)
            #expect(device.id != nil)
        }
        monitor.shutdown()
        #expect(monitor.joinResult == 0)
        #expect(await recorder.waitUntilFinished())
        print("host coldplug: \(count) PCI devices; log: \(logs.entries.prefix(3).map { "\($0.level) \($0.message)" })")
    }
}
