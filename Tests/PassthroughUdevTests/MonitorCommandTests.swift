import Foundation
import PassthroughTestSupport
import Synchronization
import Testing

/// `passthrough-agent monitor --json`, run as a user runs it, seeing a umockdev testbed.
///
/// An extension of the umockdev suite, not a suite of its own: one testbed per process at a time,
/// and that suite is serialized.
extension UdevMonitorTests {
    private static var agentBinary: URL {
        URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
            .deletingLastPathComponent().appendingPathComponent("passthrough-agent")
    }

    /// Collects the child's stdout lines as they arrive.
    private final class LineCollector: Sendable {
        private let buffer = Mutex((partial: "", lines: [String]()))

        func append(_ data: Data) {
            buffer.withLock { state in
                state.partial += String(decoding: data, as: UTF8.self)
                while let newline = state.partial.firstIndex(of: "\n") {
                    state.lines.append(String(state.partial[..<newline]))
                    state.partial = String(state.partial[state.partial.index(after: newline)...])
                }
            }
        }

        var lines: [String] { buffer.withLock { $0.lines } }

        func waitFor(timeout: Duration = .seconds(10), _ condition: ([String]) -> Bool) async -> Bool {
            let deadline = ContinuousClock.now + timeout
            while ContinuousClock.now < deadline {
                if condition(lines) { return true }
                try? await Task.sleep(for: .milliseconds(20))
            }
            return condition(lines)
        }
    }

    private func objects(_ lines: [String]) -> [[String: Any]] {
        lines.compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
    }

    @Test("monitor --json: injected uevents come out as JSON lines with the right fields; SIGTERM ends it with 0")
    func injectedEvents() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.agentBinary.path), "build the passthrough-agent product first")
        let testbed = try Testbed()
        try testbed.add(FakeAlveo.description)

        let process = Process()
        process.executableURL = Self.agentBinary
        process.arguments = ["monitor", "--json", "--libvirt-uri", "test:///default"]
        var environment = ProcessInfo.processInfo.environment
        environment["UMOCKDEV_DIR"] = testbed.rootDirectory
        process.environment = environment
        let stdout = Pipe()
        let collector = LineCollector()
        stdout.fileHandleForReading.readabilityHandler = { collector.append($0.availableData) }
        process.standardOutput = stdout
        // Never the test runner's own stderr: a child left behind must not keep `swift test` waiting.
        process.standardError = Pipe()
        try process.run()
        defer {
            if process.isRunning {
                process.terminate()
                process.waitUntilExit()
            }
        }

        let ready = await collector.waitFor { lines in
            lines.contains { $0.contains("coldplug-complete") } && lines.contains { $0.contains("\"connected\"") }
        }
        try #require(ready, "monitor did not start: \(collector.lines)")

        testbed.uevent(FakeAlveo.syspath, "unbind")
        testbed.uevent(FakeAlveo.syspath, "bind")
        testbed.setProperty(FakeAlveo.syspath, "ERROR_EVENT", "FAILED_RECOVERY")
        testbed.setProperty(FakeAlveo.syspath, "DEVICE_ONLINE", "0")
        testbed.uevent(FakeAlveo.syspath, "change")
        testbed.uevent(FakeAlveo.syspath, "remove")

        let arrived = await collector.waitFor { objects($0).filter { $0["action"] != nil }.count >= 4 }
        #expect(arrived, "got \(collector.lines)")
        let udev = objects(collector.lines).filter { $0["source"] as? String == "udev" && $0["action"] != nil }
        #expect(udev.map { $0["action"] as? String } == ["unbind", "bind", "change", "remove"])
        for event in udev {
            #expect(event["address"] as? String == "0000:01:00.0")
            #expect(event["id"] as? String == "10ee:903f")
        }
        #expect(udev[1]["driver"] as? String == "xdma")
        #expect(udev[2]["errorEvent"] as? String == "FAILED_RECOVERY")
        #expect(udev[2]["deviceOnline"] as? Bool == false)
        // Coldplug is not printed unless asked for.
        #expect(!objects(collector.lines).contains { $0["coldplug"] as? Bool == true })

        process.terminate()
        try await onOwnThread { process.waitUntilExit() }
        #expect(process.terminationReason == .exit)
        #expect(process.terminationStatus == 0)
    }
}
