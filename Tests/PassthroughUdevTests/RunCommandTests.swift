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
        let arguments = ["run", "--dry-run", "--config", bus.sysfs.root.appending("etc/config.toml").string,
                         "--sysfs-root", bus.sysfs.root.string, "--control-socket", bus.sysfs.root.appending("control").string,
                         "--lock-file", bus.sysfs.root.appending("agent.lock").string]
        process.arguments = arguments
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

        // A second agent on the same host stops at once, before it touches anything: the first
        // keeps its control socket.
        let second = try await Self.runToEnd(agent, arguments, environment: environment)
        #expect(second.status == 73, "\(second.stderr)")
        #expect(second.stderr.contains("pid \(process.processIdentifier) holds \(bus.sysfs.root.appending("agent.lock"))"),
                "\(second.stderr)")
        #expect(FileManager.default.fileExists(atPath: bus.sysfs.root.appending("control").string))

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

    @Test("run: when udev's netlink socket cannot be opened, it exits 71 with the reason, not 1")
    func runCannotStart() async throws {
        let agent = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
            .deletingLastPathComponent().appendingPathComponent("passthrough-agent")
        try #require(FileManager.default.isExecutableFile(atPath: agent.path), "build the passthrough-agent product first")
        let bus = alveoHost()
        bus.sysfs.writeFileCreatingDirectories("etc/config.toml", alveoOnTestDriverConfig)
        // umockdev's netlink stand-in binds a socket under UMOCKDEV_DIR: a regular file there makes
        // the bind, and so udev_monitor_new_from_netlink, fail.
        bus.sysfs.writeFileCreatingDirectories("not-a-testbed", "")
        var environment = ProcessInfo.processInfo.environment
        environment["UMOCKDEV_DIR"] = bus.sysfs.root.appending("not-a-testbed").string
        let result = try await Self.runToEnd(agent, [
            "run", "--dry-run", "--config", bus.sysfs.root.appending("etc/config.toml").string,
            "--sysfs-root", bus.sysfs.root.string, "--control-socket", bus.sysfs.root.appending("control").string,
            "--lock-file", bus.sysfs.root.appending("agent.lock").string,
        ], environment: environment)
        #expect(result.status == 71, "\(result.stderr)")
        #expect(result.stderr.contains("passthrough-agent cannot run: "), "\(result.stderr)")
    }

    /// Runs the agent to its end (within 30 s): its exit status and stderr.
    private static func runToEnd(_ agent: URL, _ arguments: [String], environment: [String: String]) async throws -> (status: Int32, stderr: String) {
        try await onOwnThread {
            let process = Process()
            process.executableURL = agent
            process.arguments = arguments
            process.environment = environment
            let stderr = Pipe()
            process.standardOutput = FileHandle.nullDevice
            process.standardError = stderr
            try process.run()
            let deadline = ContinuousClock.now + .seconds(30)
            while process.isRunning, ContinuousClock.now < deadline { usleep(10_000) }
            if process.isRunning {
                kill(process.processIdentifier, SIGKILL)
                process.waitUntilExit()
            }
            let text = String(decoding: stderr.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            return (process.terminationStatus, text)
        }
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
