import SystemPackage

/// A libsystemd call that failed, with the errno it reported.
///
/// libsystemd returns `-errno`; this keeps it as a typed `Errno` (swift-system), as every other error of the
/// agent does, so callers can match `.noSuchFileOrDirectory`, … and log it as the journal's `ERRNO=` field.
public struct SystemdError: Error, Hashable, Sendable, CustomStringConvertible {
    /// Which call failed, by the message that names it. A struct rather than an enum (swift-system's shape), so a
    /// kind can be added without breaking a caller's exhaustive switch.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let description: String
        private init(_ description: String) { self.description = description }

        /// `sd_notify` could not deliver a state change to the service manager.
        public static let notify = Code("sd_notify failed")
        /// `WATCHDOG_USEC` / `WATCHDOG_PID` are set but malformed.
        public static let watchdogConfiguration = Code("invalid watchdog configuration")
    }

    public let code: Code
    /// E.g. `ENOENT` when `NOTIFY_SOCKET` names a missing socket.
    public let errno: Errno

    public init(code: Code, errno: Errno) {
        self.code = code
        self.errno = errno
    }

    /// Wraps a libsystemd return value, which carries the error as `-errno`.
    init(code: Code, returnValue: Int32) {
        self.init(code: code, errno: Errno(rawValue: -returnValue))
    }

    public var description: String {
        "\(code): \(errno.description) (errno \(errno.rawValue))"
    }
}
