import SystemPackage

/// A libsystemd call that failed, with the errno it reported.
///
/// libsystemd returns `-errno`; this keeps it as a typed `Errno` (swift-system), as every other error of the
/// agent does, so callers can match `.noSuchFileOrDirectory`, … and log it as the journal's `ERRNO=` field.
public struct SystemdError: Error, Hashable, Sendable, CustomStringConvertible {
    /// Which kind of call failed. A struct rather than an enum so cases can be added later
    /// without breaking exhaustive switches in callers.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Value: Hashable, Sendable {
            case notify
            case watchdogConfiguration
        }

        private let value: Value

        private init(_ value: Value) { self.value = value }

        /// `sd_notify` could not deliver a state change to the service manager.
        public static let notify = Code(.notify)
        /// `WATCHDOG_USEC` / `WATCHDOG_PID` are set but malformed.
        public static let watchdogConfiguration = Code(.watchdogConfiguration)

        public var description: String {
            switch value {
            case .notify: "sd_notify failed"
            case .watchdogConfiguration: "invalid watchdog configuration"
            }
        }
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
