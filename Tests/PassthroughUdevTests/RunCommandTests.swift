import Foundation
import PassthroughTestSupport
import Testing

/// `passthrough-agent run` as systemd runs it: a notify socket, SIGHUP, SIGTERM; udev is a testbed.
extension UdevMonitorTests {
    /// Waits off the cooperative pool for a notification containing `text`.
    private func waitFor(_ text: String, on socket: NotifySocket, timeout: Duration = .seconds(20)) async throws -> [String]? {
        try await onOwnThread { socket.waitFor(text, timeout: timeout) }
    }

    @Test("run: READY=1 with a STATUS after the first pass; SIGHUP reloads; SIGTERM sends STOPPING=1 and exits 0")
    func runUnderSystemd() async throws {
        let agent = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
            .deletingLastPathComponent().appendingPathComponent("passthrough-agent")
        try #require(FileManager.default.isExecutableFile(atPath: agent.path), "build the passthrough-agent product first")
        let testbed = try Testbed()
        try testbed.add(FakeAlveo.description)
        let bus = alveoHost()
        bus.sysfs.writeFileCreatingDirectories("etc/config.toml", alveoOnTestDriverConfig)
        let listener = try NotifySocket(path: bus.sysfs.root.string + "/notify")
        let process = Process()
        process.executableURL = agent
        process.arguments = ["run", "--dry-run", "--config", bus.sysfs.root.appending("etc/config.toml").string,
                             "--sysfs-root", bus.sysfs.root.string, "--control-socket", bus.sysfs.root.appending("control").string]
        var environment = ProcessInfo.processInfo.environment
        environment["UMOCKDEV_DIR"] = testbed.rootDirectory
        environment["NOTIFY_SOCKET"] = listener.path
        process.environment = environment
        process.standardOutput = Pipe()
        process.standardError = Pipe()
        try process.run()
        defer {
            if process.isRunning {
                kill(process.processIdentifier, SIGKILL)
                process.waitUntilExit()
            }
        }

        let startup = try #require(try await waitFor("READY=1", on: listener), "no READY=1")
        // The summary comes with (or before) READY: the first pass has looked at the card.
        #expect(startup.joined(separator: "\n").contains("STATUS=u200: 3 step(s) pending"))

        kill(process.processIdentifier, SIGHUP)
        let reload = try #require(try await waitFor("READY=1", on: listener), "no READY=1 after SIGHUP")
        #expect(reload.first?.contains("RELOADING=1") == true)
        #expect(reload.first?.contains("MONOTONIC_USEC=") == true)

        // Asleep when idle: libdispatch's pool (whose monitor ticks every second) was never started;
        // the blocking libvirt calls have their own thread.
        let threads = Self.threadNames(of: process.processIdentifier)
        #expect(threads.contains("pa-libvirt"), "threads: \(threads)")
        #expect(!threads.contains { $0.contains("qos") || $0.contains("overcommit") || $0.contains("dispatch") },
                "libdispatch worker threads in the daemon: \(threads)")

        process.terminate()
        #expect(try await waitFor("STOPPING=1", on: listener) != nil)
        let exited = try await onOwnThread { () -> Bool in
            let deadline = ContinuousClock.now + .seconds(20)
            while process.isRunning, ContinuousClock.now < deadline { usleep(10_000) }
            return !process.isRunning
        }
        try #require(exited, "the daemon did not exit within 20 s of SIGTERM")
        #expect(process.terminationReason == .exit)
        #expect(process.terminationStatus == 0)
        // A dry run touches nothing (the child writes sysfs directly: look at the files).
        #expect(bus.sysfs.driver(of: "0000:01:00.0") == "xdma")
        #expect(bus.sysfs.driverOverride(of: "0000:01:00.0") == "(null)\n")
    }

    /// The kernel's name of every thread of `pid` (libdispatch names its workers after their queues).
    private static func threadNames(of pid: Int32) -> [String] {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
        return tasks.compactMap { task in
            (try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/comm", encoding: .utf8))?
                .trimmingCharacters(in: .whitespacesAndNewlines)
        }
    }
}
