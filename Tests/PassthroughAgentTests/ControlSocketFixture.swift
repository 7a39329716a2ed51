#if canImport(Glibc)
import Glibc
#endif
import Logging
@testable import PassthroughAgent
import PassthroughCore
import PassthroughTestSupport
import Synchronization
import SystemPackage

/// A control server on a socket in a temp dir, running until ``stop()``, recording requests.
final class RunningControlServer: Sendable {
    let sysfs = FakeSysfs()
    let server: ControlServer
    private let task: Task<Void, any Error>
    private let requests = RequestLog()

    var path: FilePath { server.path }
    var handled: [ControlRequest] { requests.all }

    init(allowedUID: UInt32 = getuid(), limits: ControlServer.Limits = .init(),
         respond: @escaping @Sendable (ControlRequest) async -> ControlResponse = { request in .success("did \(request)") }) throws {
        let path = sysfs.root.appending("run/passthrough-agent/control")
        server = try ControlServer(path: path, allowedUID: allowedUID, limits: limits,
                                   logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        let requests = self.requests
        let server = self.server
        task = Task {
            try await server.run { request in
                requests.append(request)
                return await respond(request)
            }
        }
    }

    func stop() async throws {
        server.shutdown()
        try await task.value
    }

    /// As the daemon stops on SIGTERM: cancellation reaches the handlers still running.
    func cancel() async throws {
        task.cancel()
        try await task.value
    }

    /// The blocking client, off the cooperative pool so the server's tasks can run meanwhile.
    func send(_ request: ControlRequest, timeout: Duration = .seconds(60)) async -> Result<ControlResponse, ControlClientError> {
        let client = ControlClient(path: path, timeout: timeout)
        return await offPool { () -> Result<ControlResponse, ControlClientError> in
            do throws(ControlClientError) { return .success(try client.send(request)) } catch { return .failure(error) }
        }
    }

    /// Sends raw bytes on one connection, half-closes, and reads everything the server answers.
    func exchange(_ bytes: [UInt8]) async -> String {
        let path = self.path
        return await offPool {
            let fd = try! UnixSocket.streamSocket()
            defer { UnixSocket.close(fd) }
            precondition(UnixSocket.withAddress(path, { connect(fd, $0, $1) }) == 0)
            try? UnixSocket.sendAll(fd, bytes, timeout: .seconds(10))
            shutdown(fd, CInt(SHUT_WR))
            var received: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 4096)
            while true {
                let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                if count <= 0 { break }
                received.append(contentsOf: chunk[..<count])
            }
            return String(decoding: received, as: UTF8.self)
        }
    }
}

/// One client connection driven by hand, for what ``ControlClient`` never does: pipelining, hanging
/// up mid-request, staying silent. Blocking calls: use it from ``offPool(_:)``.
final class RawConnection: Sendable {
    let fd: CInt

    init(to path: FilePath) throws(Errno) {
        fd = try UnixSocket.streamSocket()
        guard UnixSocket.withAddress(path, { connect(fd, $0, $1) }) == 0 else {
            let error = Errno(rawValue: errno)
            UnixSocket.close(fd)
            throw error
        }
        try UnixSocket.makeNonBlockingCloseOnExec(fd)
    }

    /// A connection accepted elsewhere (the fake QEMU's), made non-blocking.
    init(adopting fd: CInt) throws(Errno) {
        self.fd = fd
        try UnixSocket.makeNonBlockingCloseOnExec(fd)
    }

    deinit { UnixSocket.close(fd) }

    func send(_ text: String, timeout: Duration = .seconds(5)) throws(Errno) {
        try UnixSocket.sendAll(fd, Array(text.utf8), timeout: timeout)
    }

    /// The end of this side's input to the server: what a client does after its last request.
    func halfClose() { shutdown(fd, CInt(SHUT_WR)) }

    /// Both directions shut, as a close would (the fd stays valid until `deinit`).
    func hangUp() { shutdown(fd, CInt(SHUT_RDWR)) }

    /// Everything received until `lines` newlines, end of file, or `timeout`.
    func receive(lines: Int = .max, timeout: Duration = .seconds(60)) -> (text: String, endOfFile: Bool) {
        let deadline = ContinuousClock.now + timeout
        var received: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while received.count(where: { $0 == 0x0A }) < lines {
            do throws(Errno) {
                try UnixSocket.wait(fd, for: CInt(POLLIN), until: deadline)
            } catch {
                break
            }
            let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count == 0 { return (String(decoding: received, as: UTF8.self), true) }
            if count > 0 { received.append(contentsOf: chunk[..<count]) }
        }
        return (String(decoding: received, as: UTF8.self), false)
    }
}

/// Set once from any task or thread: "it happened".
final class Flag: Sendable {
    private let state = Mutex(false)
    var isRaised: Bool { state.withLock { $0 } }
    func raise() { state.withLock { $0 = true } }
}

final class RequestLog: Sendable {
    private let entries = Mutex<[ControlRequest]>([])
    var all: [ControlRequest] { entries.withLock { $0 } }
    func append(_ request: ControlRequest) { entries.withLock { $0.append(request) } }
}

/// Runs a blocking body on a thread of its own. Not Dispatch: on Linux the concurrency pool is
/// built on Dispatch's global queues, so blocking those starves the server under test.
func offPool<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { continuation in
        let job = BlockingJob { continuation.resume(returning: body()) }
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { raw in
            Unmanaged<BlockingJob>.fromOpaque(raw!).takeRetainedValue().body()
            return nil
        }, Unmanaged.passRetained(job).toOpaque())
        precondition(rc == 0, "pthread_create failed")
        pthread_detach(thread)
    }
}

private final class BlockingJob: Sendable {
    let body: @Sendable () -> Void
    init(_ body: @escaping @Sendable () -> Void) { self.body = body }
}
