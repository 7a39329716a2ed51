import InMemoryLogging
import Logging
@testable import PassthroughAgent
import PassthroughConfig
import PassthroughSystemd
import PassthroughTestSupport
import PassthroughUdev
import Synchronization
import Testing

/// What systemd would hear.
private final class RecordingNotifier: SystemdNotifying {
    let sent = Mutex<[NotifyMessage]>([])
    func send(_ messages: [NotifyMessage]) throws(SystemdError) -> NotifyDelivery {
        sent.withLock { $0 += messages }
        return .delivered
    }
    var watchdogInterval: Duration? { .milliseconds(50) }
}

@Suite("The daemon as systemd runs it")
struct AgentDaemonTests {
    /// The daemon with libvirt's test driver and a hand-made host, its uevents from `events`.
    private static func run(_ events: AsyncStream<UdevMonitorEvent>, notifier: RecordingNotifier, logs: InMemoryLogHandler) async -> (any Error)? {
        let bus = readyHost()
        let config = try! ConfigLoader.parse(alveoOnTestDriverConfig, path: "config.toml")
        let service = AgentDaemon(
            configPath: "config.toml", config: config, host: bus.host, logger: Logger(label: "test") { _ in logs },
            notifier: notifier, options: .fast, controlSocket: nil, reloadRequests: AsyncStream { _ in },
            uevents: { _ in (events, {}) })
        do {
            try await service.serviceGroup().run()
            return nil
        } catch {
            return error
        }
    }

    @Test("a udev monitor that fails ends the daemon (exit 71, systemd restarts it) instead of feeding the watchdog deaf",
          arguments: [true, false])
    func deadMonitorEndsTheDaemon(reportsFailure: Bool) async throws {
        let (events, feed) = AsyncStream.makeStream(of: UdevMonitorEvent.self)
        let notifier = RecordingNotifier()
        let logs = InMemoryLogHandler()
        let ended = Mutex(false)
        let daemon = Task {
            let error = await Self.run(events, notifier: notifier, logs: logs)
            ended.withLock { $0 = true }
            return error
        }
        defer { daemon.cancel() }
        feed.yield(.coldplugComplete(count: 0))
        try await waitUntil("READY=1") { notifier.sent.withLock { $0.contains(.ready) } }
        if reportsFailure {
            feed.yield(.failed(UdevError(.receive, errno: .badFileDescriptor)))
        }
        feed.finish()

        try await waitUntil("the daemon ended", timeout: .seconds(10)) { ended.withLock { $0 } }
        guard ended.withLock({ $0 }) else { return }   // recorded; the deferred cancel stops it
        let error = try #require(await daemon.value as? AgentDaemonError)
        guard case .udevMonitorFailed = error else { Issue.record("ended with \(error)"); return }
        #expect(notifier.sent.withLock { $0.contains(.stopping) })
        #expect(logs.entries.contains { $0.level == .critical && "\($0.message)".contains("exiting so that systemd restarts the agent") })
    }
}
