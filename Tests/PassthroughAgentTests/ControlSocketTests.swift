#if canImport(Glibc)
import Glibc
#endif
import Logging
@testable import PassthroughAgent
import PassthroughCore
import PassthroughTestSupport
import SystemPackage
import Testing

private let u200 = CardName("u200")!

@Suite("Control socket")
struct ControlSocketTests {
    @Test("round trip: each request reaches the handler and its response comes back")
    func roundTrip() async throws {
        let running = try RunningControlServer { request in
            switch request {
            case .status: .success(cards: [ControlCardStatus(name: "u200", state: "guest", detail: "fpga-dev")])
            default: .success("did \(request)")
            }
        }
        let status = try await running.send(.status(card: nil)).get()
        #expect(status == .success(cards: [ControlCardStatus(name: "u200", state: "guest", detail: "fpga-dev")]))
        #expect(try await running.send(.reflashPrepare(card: u200)).get() == .success("did reflash-prepare u200"))
        #expect(try await running.send(.reflashFinish(card: u200)).get() == .success("did reflash-finish u200"))
        #expect(running.handled == [.status(card: nil), .reflashPrepare(card: u200), .reflashFinish(card: u200)])
        try await running.stop()
    }

    @Test("the socket is a socket file of mode 0600, removed on shutdown")
    func mode() async throws {
        let running = try RunningControlServer()
        var info = stat()
        #expect(running.path.withPlatformString { lstat($0, &info) } == 0)
        #expect(info.st_mode & S_IFMT == S_IFSOCK)
        #expect(info.st_mode & 0o7777 == 0o600)
        try await running.stop()
        #expect(running.path.withPlatformString { access($0, F_OK) } != 0)
    }

    @Test("a peer with another uid is refused with 'permission denied' and closed; the handler never runs")
    func refused() async throws {
        let running = try RunningControlServer(allowedUID: getuid() &+ 1)
        #expect(try await running.send(.reflashPrepare(card: u200)).get() == .permissionDenied)
        #expect(await running.exchange(Array("{\"command\":\"status\"}\n".utf8))
                == "{\"ok\":false,\"code\":\"permission-denied\",\"error\":\"permission denied\"}\n")
        #expect(running.handled.isEmpty)
        try await running.stop()
    }

    @Test("malformed requests get an error each, and the connection keeps serving in order")
    func malformed() async throws {
        let running = try RunningControlServer()
        let lines = [
            "not json",
            "[1,2]",
            "{\"command\":\"dance\"}",
            "{\"card\":\"u200\"}",
            "{\"command\":\"reflash-prepare\"}",
            "{\"command\":\"reflash-finish\",\"card\":\"../x\"}",
            "{\"command\":42}",
            "",
            "{\"command\":\"status\"}",
        ]
        let answer = await running.exchange(Array((lines.joined(separator: "\n") + "\n").utf8))
        #expect(answer.split(separator: "\n") == [
            #"{"ok":false,"code":"bad-request","error":"malformed request: expected one JSON object per line"}"#,
            #"{"ok":false,"code":"bad-request","error":"malformed request: expected one JSON object per line"}"#,
            #"{"ok":false,"code":"bad-request","error":"unknown command \"dance\" (expected one of: status, reflash-prepare, reflash-finish)"}"#,
            #"{"ok":false,"code":"bad-request","error":"missing \"command\""}"#,
            #"{"ok":false,"code":"bad-request","error":"\"reflash-prepare\" needs a \"card\""}"#,
            #"{"ok":false,"code":"bad-request","error":"invalid card name \"../x\""}"#,
            #"{"ok":false,"code":"bad-request","error":"malformed request: expected one JSON object per line"}"#,
            #"{"ok":true,"message":"did status"}"#,
        ])
        #expect(running.handled == [.status(card: nil)])
        try await running.stop()
    }

    @Test("a line over 64 KiB gets an error and the connection is closed; the server carries on")
    func tooLong() async throws {
        let running = try RunningControlServer()
        let huge = Array("{\"command\":\"status\",\"card\":\"".utf8) + [UInt8](repeating: 0x61, count: 70_000) + Array("\"}\n{\"command\":\"status\"}\n".utf8)
        #expect(await running.exchange(huge) == "{\"ok\":false,\"code\":\"bad-request\",\"error\":\"request longer than 65536 bytes\"}\n")
        #expect(running.handled.isEmpty)
        #expect(try await running.send(.status(card: u200)).get() == .success("did status u200"))
        try await running.stop()
    }

    @Test("a last request without its newline is still answered")
    func noTrailingNewline() async throws {
        let running = try RunningControlServer()
        #expect(await running.exchange(Array("{\"command\":\"status\"}".utf8)) == "{\"ok\":true,\"message\":\"did status\"}\n")
        try await running.stop()
    }

    @Test("no daemon: a missing socket and a stale one are both 'noDaemon'")
    func noDaemon() async throws {
        let sysfs = FakeSysfs()
        let missing = ControlClient(path: sysfs.root.appending("control"), timeout: .seconds(1))
        #expect(throws: ControlClientError.noDaemon(missing.path, .noSuchFileOrDirectory)) { try missing.send(.status(card: nil)) }

        // A socket file nobody listens on, as a killed agent leaves it.
        let stale = sysfs.root.appending("stale")
        let fd = try UnixSocket.streamSocket()
        #expect(UnixSocket.withAddress(stale, { bind(fd, $0, $1) }) == 0)
        UnixSocket.close(fd)
        let client = ControlClient(path: stale, timeout: .seconds(1))
        #expect(throws: ControlClientError.noDaemon(stale, .connectionRefused)) { try client.send(.status(card: nil)) }

        // The next agent takes the stale path over.
        let server = try ControlServer(path: stale, allowedUID: getuid(), logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        #expect(server.path == stale)
    }

    @Test("a second agent on a live socket is refused; the first keeps its socket")
    func alreadyRunning() async throws {
        let running = try RunningControlServer()
        do {
            _ = try ControlServer(path: running.path, allowedUID: getuid(), logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
            Issue.record("expected alreadyRunning")
        } catch {
            #expect(error.code == .alreadyRunning)
        }
        #expect(try await running.send(.status(card: nil)).get().ok)
        try await running.stop()
    }

    @Test("the client gives up after its timeout; cancelling the server cancels the slow handler")
    func timeout() async throws {
        let running = try RunningControlServer { _ in
            try? await Task.sleep(for: .seconds(300))
            return .success("late")
        }
        let result = await running.send(.reflashFinish(card: u200), timeout: .milliseconds(200))
        #expect(result == .failure(.timedOut(after: .milliseconds(200))))
        let clock = ContinuousClock()
        let stopping = clock.now
        try await running.cancel()
        #expect(clock.now - stopping < .seconds(60))  // not the handler's 300 s: it was cancelled
    }

    @Test("wire forms: the request line, and ok first in responses")
    func wire() {
        #expect(String(decoding: ControlRequest.reflashPrepare(card: u200).line, as: UTF8.self) == "{\"card\":\"u200\",\"command\":\"reflash-prepare\"}\n")
        #expect(String(decoding: ControlResponse.permissionDenied.line, as: UTF8.self)
                == "{\"ok\":false,\"code\":\"permission-denied\",\"error\":\"permission denied\"}\n")
        #expect(ControlRequest.parse(ControlRequest.status(card: nil).line.dropLast()) == .success(.status(card: nil)))
    }
}
