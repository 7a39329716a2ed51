#if canImport(Glibc)
import Glibc
#endif
import Foundation
@testable import PassthroughAgent
import PassthroughCore
import PassthroughTestSupport
import SystemPackage
import Testing

/// `passthrough-agent reflash` and `run` as a script sees them: the exit status says what happened.
@Suite("reflash and run on the command line", .enabled(if: FileManager.default.isExecutableFile(atPath: AgentProcess.binary.path),
                                                       "build the passthrough-agent product first (make test does)"))
struct ReflashCommandLineTests {
    @Test("reflash exits by the daemon's code", arguments: [
        (ControlFailureCode.unknownCard, 64),
        (.notOnBus, 69),
        (.refused, 77),
        (.busy, 77),
        (.failed, 74),
        (ControlFailureCode(rawValue: "from-a-newer-daemon"), 74),
    ])
    func exitByCode(code: ControlFailureCode, status: Int) async throws {
        let running = try RunningControlServer { _ in .failure("u200: the reason", code: code) }
        let result = try await AgentProcess.run(["reflash", "u200", "--prepare", "--control-socket", running.path.string])
        #expect(Int(result.status) == status, "\(code): \(result.stderr)")
        // The daemon's message names the card already: printed once, not twice.
        #expect(result.stderr == "u200: the reason\n")
        #expect(running.handled == [.reflashPrepare(card: CardName("u200")!)])
        try await running.stop()
    }

    @Test("reflash: a refusal that does not name the card gets it in front")
    func bareRefusal() async throws {
        let running = try RunningControlServer { _ in .failure("nothing to finish", code: .refused) }
        let result = try await AgentProcess.run(["reflash", "u200", "--finish", "--control-socket", running.path.string])
        #expect(result.status == 77, "\(result.stderr)")
        #expect(result.stderr == "u200: nothing to finish\n")
        try await running.stop()
    }

    @Test("reflash: done is 0 and prints the daemon's message")
    func done() async throws {
        let running = try RunningControlServer()
        let result = try await AgentProcess.run(["reflash", "u200", "--finish", "--control-socket", running.path.string])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout == "did reflash-finish u200\n")
        try await running.stop()
    }

    @Test("reflash: 75 only when no daemon answers at all")
    func noDaemon() async throws {
        let sysfs = FakeSysfs()
        let result = try await AgentProcess.run(["reflash", "u200", "--prepare", "--control-socket", sysfs.root.appending("control").string])
        #expect(result.status == 75)
        #expect(result.stderr.contains("cannot reach the daemon at \(sysfs.root.appending("control"))"), "\(result.stderr)")
    }

    @Test("reflash: sent but no answer within --timeout is 76, says so, and the daemon cancels the request")
    func sentNoAnswer() async throws {
        let cancelled = Flag()
        let running = try RunningControlServer { request in
            guard case .reflashPrepare = request else { return .success("serving") }
            do {
                try await Task.sleep(for: .seconds(3600))
            } catch {
                cancelled.raise()
            }
            return .success("late")
        }
        // Serving already (its task got a thread), so the request is read before the client gives up.
        #expect(try await running.send(.status(card: nil)).get() == .success("serving"))
        let result = try await AgentProcess.run(["reflash", "u200", "--prepare", "--timeout", "2", "--control-socket", running.path.string])
        #expect(result.status == 76, "\(result.stderr)")
        #expect(result.stderr == """
            u200: sent; no answer within 2 s; the daemon cancels a request whose client hung up; see `passthrough-agent status`

            """)
        let deadline = ContinuousClock.now + .seconds(10)
        while !cancelled.isRaised, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
        #expect(cancelled.isRaised, "the request outlived the client that gave up on it")
        try await running.stop()
    }

    @Test("reflash --timeout out of range is a usage error before anything is sent, never a trap", arguments: ["99999999999", "9223372036854775807", "0", "-5"])
    func timeoutRange(value: String) async throws {
        let running = try RunningControlServer { request in
            try? await Task.sleep(for: .milliseconds(500))
            return .success("did \(request)")
        }
        let result = try await AgentProcess.run(["reflash", "u200", "--prepare", "--timeout=\(value)", "--control-socket", running.path.string])
        #expect(result.status == 64, "\(result.stderr)")
        #expect(result.stderr.contains("--timeout must be between 1 and 7200 seconds, not \(value)"), "\(result.stderr)")
        #expect(running.handled.isEmpty)
        try await running.stop()
    }

    @Test("run: a second agent exits 73 at once, names the lock and its holder, and touches nothing")
    func secondAgent() async throws {
        let bus = readyHost()
        bus.sysfs.writeFileCreatingDirectories("etc/config.toml", exampleConfig)
        let lockPath = bus.sysfs.root.appending("run/passthrough-agent/agent.lock")
        let controlPath = bus.sysfs.root.appending("run/passthrough-agent/control")
        // The first agent: it holds the lock, and its control socket file is there (nobody
        // listening, so a second agent without the lock would take it over as stale).
        let first = try InstanceLock(path: lockPath)
        let socket = try UnixSocket.streamSocket()
        #expect(UnixSocket.withAddress(controlPath, { bind(socket, $0, $1) }) == 0)
        UnixSocket.close(socket)

        let result = try await AgentProcess.run([
            "run", "--lock-file", lockPath.string, "--control-socket", controlPath.string,
            "--config", bus.sysfs.root.appending("etc/config.toml").string, "--sysfs-root", bus.sysfs.root.string,
        ])
        #expect(result.status == 73, "\(result.stderr)")
        #expect(result.stderr == "another passthrough-agent is running (pid \(getpid()) holds \(lockPath)); this one exits without touching anything\n")
        var info = stat()
        #expect(controlPath.withPlatformString { lstat($0, &info) } == 0, "the second agent removed the first one's socket")
        #expect(bus.sysfs.driver(of: "0000:01:00.0") == "xdma")
        #expect(bus.sysfs.driverOverride(of: "0000:01:00.0") == "(null)\n")
        withExtendedLifetime(first) {}
    }
}
