import SystemPackage

/// A failure to set up or run the control socket server, with the errno behind it.
public struct ControlSocketError: Error, Hashable, Sendable, CustomStringConvertible {
    /// Which step failed, by the message that names it. A struct rather than an enum (swift-system's shape), so a
    /// step can be added without breaking a caller's exhaustive switch.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let description: String
        private init(_ description: String) { self.description = description }

        public static let pathTooLong = Code("the socket path does not fit in sockaddr_un (107 bytes)")
        public static let directory = Code("creating the socket's directory failed")
        public static let socket = Code("socket(AF_UNIX, SOCK_STREAM) failed")
        public static let permissions = Code("restricting the socket to mode 0600 failed")
        public static let alreadyRunning = Code("another agent is already listening on the control socket")
        public static let notASocket = Code("the control socket path exists and is not a socket")
        public static let unlinkStale = Code("removing a stale control socket failed")
        public static let bind = Code("bind failed")
        public static let listen = Code("listen failed")
        public static let wakeup = Code("creating the wake-up eventfd failed")
        public static let threadStart = Code("starting the control socket thread failed")
        public static let alreadyStarted = Code("the server was already started or shut down")
    }

    public var code: Code
    public var path: FilePath
    public var errno: Errno?

    public init(_ code: Code, path: FilePath, errno: Errno? = nil) {
        self.code = code
        self.path = path
        self.errno = errno
    }

    public var description: String {
        let text = "control socket \(path): \(code)"
        return errno.map { "\(text): \($0)" } ?? text
    }
}

/// Why ``ControlClient/send(_:)`` got no answer.
public enum ControlClientError: Error, Hashable, Sendable, CustomStringConvertible {
    /// Nothing listens (`ENOENT`, `ECONNREFUSED`): no agent is running; `status` falls back to
    /// reading sysfs itself.
    case noDaemon(FilePath, Errno)
    /// The socket is root-only (`EACCES`, `EPERM`).
    case permissionDenied(FilePath, Errno)
    /// The agent did not take the whole request within the timeout; it never runs a partial line.
    case notTaken(after: Duration)
    /// The request was sent and no answer came within the timeout. Closing the connection (as the
    /// client then does) cancels the request in the agent, but it may have done part of it.
    case timedOut(after: Duration)
    /// The agent closed the connection before a whole response line.
    case connectionClosed
    case malformedResponse(String)
    case io(Errno)

    public var description: String {
        switch self {
        case .noDaemon(let path, let errno): "no agent is running (\(path): \(errno))"
        case .permissionDenied(let path, _): "permission denied on \(path): the control socket is for root only"
        case .notTaken(let after): "the agent did not take the request within \(after)"
        case .timedOut(let after): "the agent did not answer within \(after)"
        case .connectionClosed: "the agent closed the connection without an answer"
        case .malformedResponse(let text): "the agent sent an answer that is not a response: \(text.prefix(200))"
        case .io(let errno): "control socket I/O failed: \(errno)"
        }
    }
}
