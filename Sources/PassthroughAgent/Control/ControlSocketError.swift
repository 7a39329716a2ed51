import SystemPackage

/// A failure to set up or run the control socket server, with the errno behind it.
public struct ControlSocketError: Error, Hashable, Sendable, CustomStringConvertible {
    /// Which step failed. A struct over a private enum so cases can be added without breaking users.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Step: String, Hashable, Sendable {
            case pathTooLong = "the socket path does not fit in sockaddr_un (107 bytes)"
            case directory = "creating the socket's directory failed"
            case socket = "socket(AF_UNIX, SOCK_STREAM) failed"
            case permissions = "restricting the socket to mode 0600 failed"
            case alreadyRunning = "another agent is already listening on the control socket"
            case notASocket = "the control socket path exists and is not a socket"
            case unlinkStale = "removing a stale control socket failed"
            case bind = "bind failed"
            case listen = "listen failed"
            case wakeup = "creating the wake-up eventfd failed"
            case threadStart = "starting the control socket thread failed"
            case alreadyStarted = "the server was already started or shut down"
        }

        private let step: Step
        private init(_ step: Step) { self.step = step }

        public static let pathTooLong = Code(.pathTooLong)
        public static let directory = Code(.directory)
        public static let socket = Code(.socket)
        public static let permissions = Code(.permissions)
        public static let alreadyRunning = Code(.alreadyRunning)
        public static let notASocket = Code(.notASocket)
        public static let unlinkStale = Code(.unlinkStale)
        public static let bind = Code(.bind)
        public static let listen = Code(.listen)
        public static let wakeup = Code(.wakeup)
        public static let threadStart = Code(.threadStart)
        public static let alreadyStarted = Code(.alreadyStarted)

        public var description: String { step.rawValue }
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
