#if canImport(Glibc)
import Glibc
#endif
@testable import PassthroughGuest
import Synchronization
import Testing

@Suite struct GuestCommandTests {
    @Test(arguments: [
        (["prepare", "u200"], "prepare u200", GuestCommand.defaultTimeout),
        (["finish", "u200", "--timeout", "2.5"], "finish u200", .milliseconds(2500)),
        (["--port", "/dev/vport0p2", "status"], "status", GuestCommand.defaultQueryTimeout),
        (["version"], "version", GuestCommand.defaultQueryTimeout),
    ])
    func parsesCommands(_ arguments: [String], _ request: String, _ timeout: Duration) throws {
        guard case .success(.run(let command)) = GuestCommand.parse(arguments) else {
            Issue.record("\(arguments) did not parse")
            return
        }
        #expect(command.request == request)
        #expect(command.timeout == timeout)
        #expect(command.port == (arguments.contains("--port") ? "/dev/vport0p2" : nil))
    }

    @Test(arguments: [
        ([], "no command"),
        (["reflash", "u200"], "unknown command 'reflash'"),
        (["prepare"], "prepare takes one card name"),
        (["prepare", "u200", "u250"], "prepare takes one card name"),
        (["status", "u200"], "status takes no arguments"),
        (["prepare", "u200\nfinish"], "is not a card name"),
        (["prepare", "u200 other"], "is not a card name"),
        (["prepare", "0000:01:00.0"], "is not a card name"),
        (["status", "--timeout", "0"], "is not a number of seconds"),
        (["status", "--timeout", "nan"], "is not a number of seconds"),
        (["status", "--timeout"], "--timeout needs a value"),
        (["status", "--port", ""], "--port needs a path"),
        (["status", "--verbose"], "unknown option --verbose"),
    ])
    func refusesWhatIsNotARequest(_ arguments: [String], _ message: String) {
        guard case .failure(let error) = GuestCommand.parse(arguments) else {
            Issue.record("\(arguments) parsed")
            return
        }
        #expect(error.description.contains(message))
        let outcome = GuestTool.run(arguments, locate: { Issue.record("looked for a port"); return nil })
        #expect(outcome.status == 64)
        #expect(outcome.errors.contains("usage:"))
    }

    @Test(arguments: [
        ("ok prepared u200", 0), ("ok", 0),
        ("error bad-request line too long", 64), ("error unknown-card u999", 64),
        ("error refused u200 belongs to another guest", 77), ("error busy u200 is being moved", 75),
        ("error rate-limited try again in 5 s", 75), ("error not-on-bus u200", 69), ("error failed rescan", 74),
        ("error something-new", 70), ("hello", 70), ("", 70),
    ] as [(String, Int32)])
    func mapsAnswersToExitStatuses(_ answer: String, _ status: Int32) {
        #expect(GuestTool.exitStatus(forAnswer: answer) == status)
    }
}

/// A scratch directory, removed afterwards.
final class ScratchDirectory {
    let path: String

    init() {
        var template = Array("/tmp/pg-test.XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        precondition(made != nil, "mkdtemp failed")
        path = String(cString: made!)
    }

    deinit { _ = system("rm -rf '\(path)'") }

    func write(_ text: String, to relative: String) {
        let full = path + "/" + relative
        var parent = full
        while parent.last != "/" { parent.removeLast() }
        _ = system("mkdir -p '\(parent)'")
        let fd = open(full, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        _ = text.withCString { Glibc.write(fd, $0, strlen($0)) }
        close(fd)
    }
}

/// The host side of the channel, standing in for QEMU plus the agent: accepts one connection on a unix socket,
/// reads one line, then answers (or not) on a thread of its own.
final class FakeAgentSocket: Sendable {
    let path: String
    private let listenFD: Int32
    private let received = Received()

    private final class Received: Sendable {
        let line = Mutex<String?>(nil)
    }

    enum Behaviour: Sendable {
        case answer(String)
        case hangUp
        case silence
    }

    init(in directory: ScratchDirectory, behaviour: Behaviour) {
        path = directory.path + "/agent.sock"
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in raw.copyBytes(from: bytes) }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        precondition(bound == 0 && listen(fd, 1) == 0, "cannot listen at \(bytes)")
        listenFD = fd
        let received = received
        spawn {
            let connection = accept(fd, nil, nil)
            var line: [UInt8] = []
            var byte: UInt8 = 0
            while read(connection, &byte, 1) == 1, byte != 0x0A { line.append(byte) }
            received.line.withLock { $0 = String(decoding: line, as: UTF8.self) }
            switch behaviour {
            case .answer(let text): _ = (text + "\n").withCString { write(connection, $0, strlen($0)) }
            case .hangUp: break
            case .silence: usleep(500_000)
            }
            close(connection)
        }
    }

    deinit { close(listenFD) }

    var line: String? { received.line.withLock { $0 } }
}

private final class Job: Sendable {
    let body: @Sendable () -> Void
    init(_ body: @escaping @Sendable () -> Void) { self.body = body }
}

/// A detached pthread: the tool under test blocks, so the other side must not share its thread.
func spawn(_ body: @escaping @Sendable () -> Void) {
    var thread = pthread_t()
    let rc = pthread_create(&thread, nil, { raw in
        Unmanaged<Job>.fromOpaque(raw!).takeRetainedValue().body()
        return nil
    }, Unmanaged.passRetained(Job(body)).toOpaque())
    precondition(rc == 0)
    pthread_detach(thread)
}

@Suite struct GuestToolExchangeTests {
    let scratch = ScratchDirectory()

    @Test func findsThePortByItsSysfsNameOrUdevsLink() {
        scratch.write("org.qemu.guest_agent.0\n", to: "sys/class/virtio-ports/vport0p1/name")
        scratch.write("org.passthrough-agent.0\n", to: "sys/class/virtio-ports/vport0p2/name")
        #expect(AgentPort.locate(sysRoot: scratch.path + "/sys", devRoot: "/dev") == "/dev/vport0p2")

        let other = ScratchDirectory()
        other.write("org.qemu.guest_agent.0\n", to: "sys/class/virtio-ports/vport0p1/name")
        #expect(AgentPort.locate(sysRoot: other.path + "/sys", devRoot: other.path + "/dev") == nil)
        other.write("", to: "dev/virtio-ports/org.passthrough-agent.0")
        #expect(AgentPort.locate(sysRoot: other.path + "/sys", devRoot: other.path + "/dev")
                == other.path + "/dev/virtio-ports/org.passthrough-agent.0")
    }

    @Test func sendsOneLineAndPrintsTheAnswer() {
        let agent = FakeAgentSocket(in: scratch, behaviour: .answer("ok prepared u200"))
        let outcome = GuestTool.run(["prepare", "u200", "--port", agent.path, "--timeout", "5"])
        #expect(outcome == GuestTool.Outcome(status: 0, output: "ok prepared u200\n", errors: ""))
        #expect(agent.line == "prepare u200")
    }

    @Test func anErrorAnswerIsPrintedAndExitsWithItsCode() {
        let agent = FakeAgentSocket(in: scratch, behaviour: .answer("error refused u200 is lent to another guest"))
        let outcome = GuestTool.run(["finish", "u200", "--port", agent.path, "--timeout", "5"])
        #expect(outcome.status == 77)
        #expect(outcome.output == "error refused u200 is lent to another guest\n")
    }

    @Test func noAnswerInTimeIs76() {
        let agent = FakeAgentSocket(in: scratch, behaviour: .silence)
        let started = ContinuousClock.now
        let outcome = GuestTool.run(["status", "--port", agent.path, "--timeout", "0.2"])
        #expect(outcome.status == 76)
        #expect(outcome.errors.contains("no answer from the agent in time"))
        #expect(ContinuousClock.now - started < .seconds(2))
    }

    @Test func aPortClosedBeforeTheAnswerIs76() {
        let agent = FakeAgentSocket(in: scratch, behaviour: .hangUp)
        let outcome = GuestTool.run(["status", "--port", agent.path, "--timeout", "5"])
        #expect(outcome.status == 76)
        #expect(outcome.errors.contains("closed before an answer"))
    }

    @Test func noPortIs69() {
        #expect(GuestTool.run(["status"], locate: { nil }).status == 69)
        let outcome = GuestTool.run(["status", "--port", scratch.path + "/missing"])
        #expect(outcome.status == 69)
        #expect(outcome.errors.contains("No such file or directory"))
    }

    /// A character device, as `/dev/vportNpM` is: `/dev/null` takes the request and reads as end of file, as a
    /// virtio port does while nobody is connected on the host side.
    @Test func aCharacterDeviceWithNobodyOnTheHostSideIs76() {
        let outcome = GuestTool.run(["status", "--port", "/dev/null", "--timeout", "5"])
        #expect(outcome.status == 76)
        #expect(outcome.errors.contains("nobody on the host side"))
    }
}
