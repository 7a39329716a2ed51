import Foundation
import InMemoryLogging
import Logging
@testable import PassthroughAgent
import PassthroughConfig
import PassthroughSystemd
import PassthroughTestSupport
import PassthroughUdev
import Synchronization
import Testing

/// Hears READY=1, feeds no watchdog.
private final class ReadyNotifier: SystemdNotifying {
    let ready = Mutex(false)
    func send(_ messages: [NotifyMessage]) throws(SystemdError) -> NotifyDelivery {
        if messages.contains(.ready) { ready.withLock { $0 = true } }
        return .delivered
    }
    var watchdogInterval: Duration? { nil }
}

@Suite("Metrics: the daemon with [agent] metrics-file", .serialized)
struct MetricsServiceTests {
    private static let promtool = "/usr/bin/promtool"

    /// `passthrough-agent run` on the hand-made host and libvirt's test driver, its metrics file configured.
    private static func run(dryRun: Bool) async throws -> (Textfile, InMemoryLogHandler, Task<Void, any Error>, ReadyNotifier) {
        let bus = readyHost()
        let textfile = Textfile(under: bus.sysfs.root)
        let config = try ConfigLoader.parse("[agent]\nmetrics-file = \"\(textfile.file)\"\n" + alveoOnTestDriverConfig, path: "config.toml")
        let logs = InMemoryLogHandler()
        let notifier = ReadyNotifier()
        var options = CardSupervisor.Options.fast
        options.dryRun = dryRun
        let (events, feed) = AsyncStream.makeStream(of: UdevMonitorEvent.self)
        feed.yield(.coldplugComplete(count: 0))
        let service = AgentDaemon(
            configPath: "config.toml", config: config, host: bus.host, logger: Logger(label: "test") { _ in logs },
            notifier: notifier, options: options, controlSocket: nil, reloadRequests: AsyncStream { _ in },
            uevents: { _ in (events, {}) })
        let daemon = Task { try await service.serviceGroup().run() }
        return (textfile, logs, daemon, notifier)
    }

    @Test("run: the file appears with libvirt connected and the card's series")
    func written() async throws {
        let (textfile, _, daemon, _) = try await Self.run(dryRun: false)
        defer { daemon.cancel() }
        try await waitUntil("libvirt connected, the card seen") {
            guard textfile.has("passthrough_agent_libvirt_connected 1.0"), let text = textfile.text else { return false }
            return text.contains(#"passthrough_agent_card_info{card="u200",address="0000:01:00","#)
        }
    }

    @Test("run --dry-run: no metrics file (a dry run changes nothing), and the log says so")
    func dryRunWritesNothing() async throws {
        let (textfile, logs, daemon, notifier) = try await Self.run(dryRun: true)
        defer { daemon.cancel() }
        try await waitUntil("READY=1") { notifier.ready.withLock { $0 } }
        #expect(textfile.names.isEmpty, "\(textfile.names)")
        #expect(logs.entries.contains { "\($0.message)" == "dry run: the metrics file \(textfile.file) is not written" })
    }

    @Test("promtool check metrics accepts a file the daemon wrote through a reflash",
          .enabled(if: FileManager.default.isExecutableFile(atPath: promtool), "needs promtool (Debian: prometheus)"))
    func promtoolAccepts() async throws {
        let metrics = AgentMetrics()
        let rig = try await ReflashRig { $0.observer = metrics }
        let textfile = Textfile(under: rig.bus.sysfs.root)
        let writer = textfile.keep(metrics)
        defer { rig.loop.cancel(); writer.cancel() }
        _ = try await rig.supervisor.reflash(ReflashRig.card, .prepare)
        rig.cardReturnsOnRescan(as: "10ee:9038")
        _ = try await rig.supervisor.reflash(ReflashRig.card, .finish)
        try await waitUntil("re-attached") { textfile.has(#"passthrough_agent_reattach_duration_seconds_count{card="u200"} 1"#) }

        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.promtool)
        process.arguments = ["check", "metrics"]
        process.standardInput = try FileHandle(forReadingFrom: URL(fileURLWithPath: textfile.file.string))
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let said = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus == 0, "\(said)\n\(textfile.text ?? "")")
        // Lint findings (names, units, counters without _total) are printed even with status 0.
        #expect(said.isEmpty, "\(said)")
    }
}
