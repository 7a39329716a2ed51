#if canImport(Glibc)
import Glibc
#endif
@testable import PassthroughAgent
import PassthroughCore
import Synchronization
import SystemPackage
import Testing

private let u200 = CardName("u200")!

/// A handler that never answers a reflash by itself, like a `--prepare` waiting for a guest: it
/// parks until it is cancelled, and keeps a log of what happened to each. `status` is answered.
private final class ParkedHandler: Sendable {
    private let entries = Mutex<[String]>([])

    var log: [String] { entries.withLock { $0 } }

    var handler: @Sendable (ControlRequest) async -> ControlResponse {
        { [self] request in
            if case .status = request { return .success("serving") }
            entries.withLock { $0.append("started \(request)") }
            do {
                try await Task.sleep(for: .seconds(3600))
                return .success("slept")
            } catch {
                entries.withLock { $0.append("cancelled \(request)") }
                return .failure(for: error)
            }
        }
    }

    /// Waits (polling: the log is written from the server's tasks) until `entry` is in the log.
    func waitFor(_ entry: String, timeout: Duration = .seconds(60)) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if log.contains(entry) { return true }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return false
    }
}

@Suite("Control socket: hang-ups and limits")
struct ControlSocketLimitsTests {
    @Test("a client that hangs up mid-request cancels it in the daemon")
    func hangUpCancels() async throws {
        let parked = ParkedHandler()
        let running = try RunningControlServer(respond: parked.handler)
        let path = running.path
        let client = try await offPool { () -> Result<RawConnection, Errno> in
            Result { () throws(Errno) -> RawConnection in
                let connection = try RawConnection(to: path)
                try connection.send("{\"command\":\"reflash-prepare\",\"card\":\"u200\"}\n")
                return connection
            }
        }.get()
        #expect(await parked.waitFor("started reflash-prepare u200"))
        #expect(!parked.log.contains("cancelled reflash-prepare u200"))
        _ = consume client  // closes the socket: the client is gone
        #expect(await parked.waitFor("cancelled reflash-prepare u200"), "the request outlived its client: \(parked.log)")
        try await running.cancel()  // as on SIGTERM: a handler still parked is cancelled
    }

    @Test("a client that times out (reflash --timeout) hangs up, and its request is cancelled")
    func clientTimeoutCancels() async throws {
        let parked = ParkedHandler()
        let running = try RunningControlServer(respond: parked.handler)
        // Serving already, so the thread reads the request before the client gives up (on a loaded
        // machine the server's task may take a while to get a thread).
        #expect(try await running.send(.status(card: nil)).get() == .success("serving"))
        #expect(await running.send(.reflashFinish(card: u200), timeout: .seconds(1)) == .failure(.timedOut(after: .seconds(1))))
        #expect(await parked.waitFor("cancelled reflash-finish u200"), "\(parked.log)")
        try await running.cancel()  // as on SIGTERM: a handler still parked is cancelled
    }

    @Test("requests queued behind one that is cancelled by a hang-up never run")
    func queuedRequestsDieWithTheClient() async throws {
        let parked = ParkedHandler()
        let running = try RunningControlServer(respond: parked.handler)
        let path = running.path
        let client = try await offPool { () -> Result<RawConnection, Errno> in
            Result { () throws(Errno) -> RawConnection in
                let connection = try RawConnection(to: path)
                try connection.send("{\"command\":\"reflash-prepare\",\"card\":\"u200\"}\n{\"command\":\"reflash-finish\",\"card\":\"u200\"}\n")
                return connection
            }
        }.get()
        #expect(await parked.waitFor("started reflash-prepare u200"))
        _ = consume client
        #expect(await parked.waitFor("cancelled reflash-prepare u200"))
        try await Task.sleep(for: .milliseconds(300))
        #expect(parked.log == ["started reflash-prepare u200", "cancelled reflash-prepare u200"])
        try await running.cancel()  // as on SIGTERM: a handler still parked is cancelled
    }

    @Test("a half-close after the last request is not a hang-up: a slow answer still arrives")
    func halfCloseIsNotAHangUp() async throws {
        let running = try RunningControlServer { request in
            try? await Task.sleep(for: .milliseconds(300))
            return .success("did \(request)")
        }
        let path = running.path
        let answer = try await offPool { () -> Result<(text: String, endOfFile: Bool), Errno> in
            Result { () throws(Errno) in
                let connection = try RawConnection(to: path)
                try connection.send("{\"command\":\"reflash-finish\",\"card\":\"u200\"}\n")
                connection.halfClose()
                return connection.receive()
            }
        }.get()
        #expect(answer.text == "{\"ok\":true,\"message\":\"did reflash-finish u200\"}\n")
        #expect(answer.endOfFile)
        try await running.stop()
    }

    @Test("one request in flight per connection: the rest is not read until it is answered, then answered in order")
    func oneInFlight() async throws {
        let gate = Flag()
        let running = try RunningControlServer { request in
            while case .reflashPrepare = request, !gate.isRaised {
                try? await Task.sleep(for: .milliseconds(10))
            }
            return .success("did \(request)")
        }
        let path = running.path
        let connection = try await offPool { Result { () throws(Errno) in try RawConnection(to: path) } }.get()
        // While the first request is answered, the daemon reads nothing more: a client that
        // pipelines ~4 MiB finds the socket full instead of the daemon's memory.
        let first = "{\"command\":\"reflash-prepare\",\"card\":\"u200\"}\n"
        let status = "{\"command\":\"status\"}\n"
        let pipelined = await offPool { () -> Errno? in
            do throws(Errno) {
                try connection.send(first)
                try connection.send(String(repeating: status, count: 200_000), timeout: .seconds(2))
                return nil
            } catch {
                return error
            }
        }
        #expect(pipelined == .timedOut, "the daemon read ahead of the request in flight")
        #expect(!running.handled.contains(.status(card: nil)))
        gate.raise()
        let answers = await offPool { connection.receive(lines: 3) }
        #expect(answers.text.split(separator: "\n").prefix(3) == [
            #"{"ok":true,"message":"did reflash-prepare u200"}"#,
            #"{"ok":true,"message":"did status"}"#,
            #"{"ok":true,"message":"did status"}"#,
        ])
        connection.hangUp()
        try await running.stop()
    }

    @Test("over the connection cap: answered 'busy' and closed; a slot that frees up is used again")
    func connectionCap() async throws {
        var limits = ControlServer.Limits()
        limits.maximumConnections = 3
        limits.idleTimeout = .seconds(120)  // a starved test between connect and send is no idle client
        let running = try RunningControlServer(limits: limits)
        let path = running.path
        let open = try await offPool {
            Result { () throws(Errno) in try (0..<3).map { (_) throws(Errno) in try RawConnection(to: path) } }
        }.get()
        // The three are served (a status each) before the fourth comes.
        for connection in open {
            let answer = await offPool { () -> String in
                try? connection.send("{\"command\":\"status\"}\n")
                return connection.receive(lines: 1).text
            }
            #expect(answer == "{\"ok\":true,\"message\":\"did status\"}\n")
        }
        let refused = try await offPool {
            Result { () throws(Errno) in try RawConnection(to: path).receive() }
        }.get()
        #expect(refused.text == "{\"ok\":false,\"code\":\"busy\",\"error\":\"too many connections to the agent (3); try again\"}\n")
        #expect(refused.endOfFile)
        #expect(ControlResponse.parse(refused.text.utf8.dropLast())?.code == .busy)

        open[0].halfClose()
        _ = await offPool { open[0].receive() }  // the daemon closes its end
        try await Task.sleep(for: .milliseconds(100))
        #expect(try await running.send(.status(card: nil)).get() == .success("did status"))
        try await running.stop()
    }

    @Test("a connection that sends no request within the idle timeout is told so and closed")
    func idleTimeout() async throws {
        var limits = ControlServer.Limits()
        limits.idleTimeout = .milliseconds(200)
        let running = try RunningControlServer(limits: limits)
        let path = running.path
        let clock = ContinuousClock()
        let started = clock.now
        let silent = try await offPool {
            Result { () throws(Errno) in try RawConnection(to: path).receive(timeout: .seconds(120)) }
        }.get()
        #expect(silent.text == "{\"ok\":false,\"code\":\"bad-request\",\"error\":\"no request within 0.2 seconds; closing the connection\"}\n")
        #expect(silent.endOfFile)
        #expect(clock.now - started < .seconds(60))  // closed by the agent, long before the client gives up

        // A request trickled in byte by byte does not keep a connection open past the timeout either.
        let trickled = try await offPool {
            Result { () throws(Errno) -> (text: String, endOfFile: Bool) in
                let connection = try RawConnection(to: path)
                for byte in "{\"command\":\"status\"".utf8.prefix(10) {
                    try? connection.send(String(decoding: [byte], as: UTF8.self))
                    usleep(50_000)
                }
                return connection.receive(timeout: .seconds(120))
            }
        }.get()
        #expect(trickled.text.contains("\"code\":\"bad-request\""))
        #expect(trickled.endOfFile)
        #expect(running.handled.isEmpty)
        try await running.stop()
    }

    @Test("a timeout of any size waits without trapping (poll's int milliseconds saturate)")
    func hugeTimeout() async throws {
        let running = try RunningControlServer { request in
            try? await Task.sleep(for: .milliseconds(100))
            return .success("did \(request)")
        }
        // Milliseconds of this overflow Int64, which trapped in the client's wait.
        let huge = Duration.seconds(Int64.max / 2)
        #expect(try await running.send(.status(card: nil), timeout: huge).get() == .success("did status"))
        #expect(UnixSocket.pollTimeout(huge) == CInt.max)
        #expect(UnixSocket.pollTimeout(.seconds(99_999_999_999)) == CInt.max)
        #expect(UnixSocket.pollTimeout(.milliseconds(1500)) == 1501)
        #expect(UnixSocket.pollTimeout(.seconds(-3)) == 0)
        try await running.stop()
    }
}

@Suite("Control socket: failure codes")
struct ControlFailureCodeTests {
    @Test("each refusal of the daemon carries its code on the wire", arguments: [
        (CardSupervisor.ReflashRefused.Reason.unknownCard, "unknown-card"),
        (.notOnBus, "not-on-bus"),
        (.unsafe, "refused"),
        (.failed, "failed"),
        (.busy, "busy"),
    ])
    func codes(reason: CardSupervisor.ReflashRefused.Reason, wire: String) {
        let response = ControlResponse.failure(for: CardSupervisor.ReflashRefused(reason, "u200: why"))
        #expect(String(decoding: response.line, as: UTF8.self) == "{\"ok\":false,\"code\":\"\(wire)\",\"error\":\"u200: why\"}\n")
        #expect(ControlResponse.parse(response.line.dropLast()) == response)
    }

    @Test("cancellation and any other error have codes too; an unknown code still decodes")
    func otherErrors() {
        #expect(ControlResponse.failure(for: CancellationError()).code == .cancelled)
        #expect(ControlResponse.failure(for: Errno.ioError).code == .failed)
        let newer = ControlResponse.parse(Array(#"{"ok":false,"code":"from-the-future","error":"x"}"#.utf8))
        #expect(newer?.code == ControlFailureCode(rawValue: "from-the-future"))
    }

    @Test("the daemon's answers: an unknown card and a card never seen on the bus, each by its code")
    func daemonAnswers() async throws {
        let fixture = try await DaemonFixture.make(config: DaemonFixture.alveo + """

            [[card]]
            name = "u250"
            address = "0000:05:00"
            guest = "fpga-dev"
            """)
        let loop = Task { await fixture.supervisor.run() }
        defer { loop.cancel() }
        let unknown = await AgentDaemon.answer(.reflashPrepare(card: CardName("u55c")!), supervisor: fixture.supervisor)
        #expect(unknown.code == .unknownCard)
        #expect(unknown.error == "no card named u55c in the configuration")
        let absent = await AgentDaemon.answer(.reflashPrepare(card: CardName("u250")!), supervisor: fixture.supervisor)
        #expect(absent.code == .notOnBus, "\(absent)")
    }
}
