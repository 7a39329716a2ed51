#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Logging
import PassthroughThreads
import Synchronization
import SystemPackage

/// The agent's root-only control socket: AF_UNIX, SOCK_STREAM, mode 0600, newline-delimited
/// JSON (``ControlRequest`` in, ``ControlResponse`` out).
///
/// `init` binds and listens, so "cannot create the socket" and "another agent is running" are
/// startup errors. ``run(_:)`` starts one dedicated thread that polls the listening socket, the
/// clients and a ``Wakeup`` (blocking calls never run on the cooperative pool), and serves each
/// connection in its own child task. Every peer's uid is checked with `SO_PEERCRED` before a byte
/// is read; any other uid gets `{"ok":false,"code":"permission-denied",...}` and is closed.
///
/// Limits, so that no client can hold the daemon's attention or memory:
/// - One request in flight per connection: the next line is read only after the answer to the
///   last (a client may pipeline; what it sends meanwhile waits in the socket).
/// - A client that hangs up cancels the request it is waiting for: the handler's task is
///   cancelled, and nothing it sent afterwards is read. A half-close (`shutdown(SHUT_WR)` after
///   the last request) is not a hang-up.
/// - At most ``Limits/maximumConnections`` connections; one more gets `"code":"busy"` and is closed.
/// - A connection that sends no request within ``Limits/idleTimeout`` (of opening, or of its
///   last answer) gets `"code":"bad-request"` and is closed.
///
/// ```swift
/// let server = try ControlServer(logger: logger)
/// await server.run { request in await manager.handle(request) }   // until shutdown() or cancellation
/// ```
public final class ControlServer: Sendable {
    public typealias Handler = @Sendable (ControlRequest) async -> ControlResponse

    public struct Limits: Sendable {
        /// Connections served at once (one fd each, far below the default `LimitNOFILE=`).
        public var maximumConnections = 16
        /// How long a connection may stay without a request.
        public var idleTimeout = Duration.seconds(10)

        public init() {}
    }

    public static let defaultPath: FilePath = "/run/passthrough-agent/control"
    /// The longest request line accepted; longer ones get an error and the connection is closed.
    public static let maximumRequestBytes = 64 * 1024
    static let backlog: CInt = 16

    private enum State {
        case bound(listenFD: CInt)
        case running(thread: pthread_t, listenFD: CInt)
        case stopped
    }

    public let path: FilePath
    /// The only uid let in: 0 in the daemon; tests pass their own.
    public let allowedUID: UInt32
    public let limits: Limits
    private let logger: Logger
    private let wakeup: Wakeup
    private let state: Mutex<State>

    public init(path: FilePath = ControlServer.defaultPath, allowedUID: UInt32 = 0, limits: Limits = Limits(),
                logger: Logger) throws(ControlSocketError) {
        self.path = path
        self.allowedUID = allowedUID
        self.limits = limits
        self.logger = logger
        do {
            wakeup = try Wakeup()
        } catch {
            throw ControlSocketError(.wakeup, path: path, errno: error)
        }
        state = Mutex(.bound(listenFD: try Self.listen(at: path, logger: logger)))
    }

    deinit {
        shutdown()
        state.withLock { state in
            if case .bound(let fd) = state { Self.close(fd, unlinking: path) }
            state = .stopped
        }
    }

    /// Serves until ``shutdown()`` or cancellation of the calling task. Returns once the thread has
    /// exited, the socket file is gone and every connection's task has finished (cancellation
    /// reaches the handlers still running).
    public func run(_ handler: @escaping Handler) async throws(ControlSocketError) {
        let (accepted, continuation) = AsyncStream.makeStream(of: AcceptedConnection.self, bufferingPolicy: .unbounded)
        try state.withLock { (state) throws(ControlSocketError) in
            guard case .bound(let listenFD) = state else { throw ControlSocketError(.alreadyStarted, path: path) }
            let context = ControlThreadContext(listenFD: listenFD, wakeup: wakeup, allowedUID: allowedUID, limits: limits,
                                               logger: logger, accepted: continuation)
            do throws(Errno) {
                state = .running(thread: try Self.spawn(context), listenFD: listenFD)
            } catch {
                continuation.finish()
                throw ControlSocketError(.threadStart, path: path, errno: error)
            }
        }
        logger.info("control socket listening", metadata: ["path": "\(path)", "allowed-uid": "\(allowedUID)"])
        let threadWakeup = wakeup
        let connectionLogger = logger
        await withTaskCancellationHandler {
            await withDiscardingTaskGroup { group in
                for await connection in accepted {
                    group.addTask { await Self.serve(connection, handler: handler, logger: connectionLogger) }
                }
            }
        } onCancel: {
            threadWakeup.shutdown()
        }
        state.withLock { state in
            guard case .running(let thread, let listenFD) = state else { return }
            // The thread finished the stream as its last act; this join does not wait long.
            _ = pthread_join(thread, nil)
            Self.close(listenFD, unlinking: path)
            state = .stopped
        }
        logger.info("control socket closed", metadata: ["path": "\(path)"])
    }

    /// Stops accepting and reading; idempotent, from any thread.
    public func shutdown() {
        wakeup.shutdown()
    }

    // MARK: Serving one connection

    private static func serve(_ accepted: AcceptedConnection, handler: @escaping Handler, logger: Logger) async {
        let connection = accepted.connection
        defer { connection.finish() }
        let peer: Logger.Metadata = ["peer-pid": "\(connection.peer.pid)", "peer-uid": "\(connection.peer.uid)"]
        for await input in accepted.input {
            let response: ControlResponse
            switch input {
            case .tooLong:
                let error = ControlRequestError.tooLong(limit: maximumRequestBytes)
                logger.warning("control: refused a request", metadata: peer.merging(["error": "\(error)"]) { $1 })
                connection.send(ControlResponse.failure(error.description, code: .badRequest).line, logger: logger)
                return
            case .idle(let timeout):
                connection.send(ControlResponse.idle(after: timeout).line, logger: logger)
                return
            case .line(let bytes):
                switch ControlRequest.parse(bytes) {
                case .failure(let error):
                    logger.warning("control: refused a request", metadata: peer.merging(["error": "\(error)"]) { $1 })
                    response = .failure(error.description, code: .badRequest)
                case .success(let request):
                    logger.info("control: \(request)", metadata: peer)
                    guard let answer = await answer(request, handler: handler, unlessHangUpOn: connection) else {
                        logger.notice("control: \(request) cancelled: the client hung up", metadata: peer)
                        return
                    }
                    response = answer
                }
            }
            guard connection.send(response.line, logger: logger) else { return }
            connection.answered()
        }
    }

    /// Runs the handler in a child task that is cancelled when the client hangs up meanwhile (a
    /// client that gave up must not have its reflash go on without it). `nil` when it hung up: the
    /// handler has then finished its cancellation, and its answer has nobody to go to.
    private static func answer(_ request: ControlRequest, handler: @escaping Handler,
                               unlessHangUpOn connection: ControlConnection) async -> ControlResponse? {
        enum Outcome: Sendable {
            case answered(ControlResponse)
            case hungUp
            /// The watch was cancelled (the answer came, or the server stops).
            case watchEnded
        }
        return await withTaskGroup(of: Outcome.self) { group in
            group.addTask { .answered(await handler(request)) }
            group.addTask { await connection.waitForHangUp() ? .hungUp : .watchEnded }
            var hungUp = false
            while let outcome = await group.next() {
                switch outcome {
                case .answered(let response):
                    group.cancelAll()
                    return hungUp ? nil : response
                case .hungUp:
                    hungUp = true
                    group.cancelAll()
                case .watchEnded:
                    continue
                }
            }
            return nil
        }
    }

    // MARK: Setup

    private static func listen(at path: FilePath, logger: Logger) throws(ControlSocketError) -> CInt {
        guard path.string.utf8.count <= UnixSocket.maximumPathBytes else { throw ControlSocketError(.pathTooLong, path: path) }
        try makeParentDirectory(of: path)
        try removeStaleSocket(at: path, logger: logger)
        let fd: CInt
        do {
            fd = try UnixSocket.streamSocket()
        } catch {
            throw ControlSocketError(.socket, path: path, errno: error)
        }
        do throws(ControlSocketError) {
            // bind() creates the file with the socket inode's mode minus the umask: setting it
            // here makes the file 0600 from its first instant, without touching the process umask.
            try step(.permissions, path) { fchmod(fd, 0o600) }
            try step(.socket, path) { fcntl(fd, F_SETFL, O_NONBLOCK) }
            guard let bound = UnixSocket.withAddress(path, { bind(fd, $0, $1) }) else {
                throw ControlSocketError(.pathTooLong, path: path)
            }
            if bound != 0 { throw ControlSocketError(.bind, path: path, errno: Errno(rawValue: errno)) }
            try step(.permissions, path) { path.withPlatformString { chmod($0, 0o600) } }
            try step(.listen, path) { Glibc.listen(fd, backlog) }
        } catch {
            UnixSocket.close(fd)
            throw error
        }
        return fd
    }

    private static func step(_ code: ControlSocketError.Code, _ path: FilePath, _ body: () -> CInt) throws(ControlSocketError) {
        do {
            try UnixSocket.call(body)
        } catch {
            throw ControlSocketError(code, path: path, errno: error)
        }
    }

    /// A socket file left by a killed agent is removed; one with a live listener is not ours to take.
    private static func removeStaleSocket(at path: FilePath, logger: Logger) throws(ControlSocketError) {
        var info = stat()
        guard path.withPlatformString({ lstat($0, &info) }) == 0 else { return }
        guard info.st_mode & S_IFMT == S_IFSOCK else { throw ControlSocketError(.notASocket, path: path) }
        if let probe = try? UnixSocket.streamSocket() {
            defer { UnixSocket.close(probe) }
            if UnixSocket.withAddress(path, { connect(probe, $0, $1) }) == 0 {
                throw ControlSocketError(.alreadyRunning, path: path)
            }
        }
        logger.info("control: removing a stale socket", metadata: ["path": "\(path)"])
        if path.withPlatformString({ unlink($0) }) != 0, errno != ENOENT {
            throw ControlSocketError(.unlinkStale, path: path, errno: Errno(rawValue: errno))
        }
    }

    private static func makeParentDirectory(of path: FilePath) throws(ControlSocketError) {
        if let (directory, errno) = UnixSocket.makeParentDirectories(of: path) {
            throw ControlSocketError(.directory, path: directory, errno: errno)
        }
    }

    private static func close(_ fd: CInt, unlinking path: FilePath) {
        UnixSocket.close(fd)
        _ = path.withPlatformString { unlink($0) }
    }

    private static func spawn(_ context: ControlThreadContext) throws(Errno) -> pthread_t {
        try ThreadSpawn.start { ControlThread(context: context).run() }
    }
}
