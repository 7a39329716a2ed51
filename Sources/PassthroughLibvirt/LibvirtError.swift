internal import CLibvirt
import SystemPackage

/// A failure libvirt reported: its `virErrorNumber` code, `virErrorDomain` and message.
public struct LibvirtError: Error, Hashable, Sendable, CustomStringConvertible {
    public let code: Int32
    public let domain: Int32
    public let message: String
    /// The libvirt function that failed, for logs.
    public let operation: String

    public init(code: Int32, domain: Int32, message: String, operation: String) {
        self.code = code
        self.domain = domain
        self.message = message
        self.operation = operation
    }

    /// The driver does not implement the call (e.g. hot-plug on `test:///`).
    public var isNotSupported: Bool { code == Self.raw(VIR_ERR_NO_SUPPORT) }
    /// No domain by that name.
    public var isNoDomain: Bool { code == Self.raw(VIR_ERR_NO_DOMAIN) }
    /// Not possible in the domain's current state, e.g. a live change to a shut-off guest.
    public var isOperationInvalid: Bool { code == Self.raw(VIR_ERR_OPERATION_INVALID) }
    /// The connection is gone; the reconnect logic will bring it back.
    public var isConnectionLost: Bool {
        [VIR_ERR_NO_CONNECT, VIR_ERR_INVALID_CONN, VIR_ERR_RPC].contains { code == Self.raw($0) }
    }

    public var description: String { "\(operation): \(message) (libvirt code \(code), domain \(domain))" }

    /// Reads and clears this thread's libvirt error.
    ///
    /// libvirt keeps the last error per thread and resets it on every API call, so this must run on the thread of
    /// the failed call, right after it, before anything else (no `await`, no other libvirt call).
    static func last(operation: String) -> LibvirtError {
        defer { virResetLastError() }
        guard let error = virGetLastError() else {
            return LibvirtError(
                code: raw(VIR_ERR_INTERNAL_ERROR), domain: Int32(bitPattern: VIR_FROM_NONE.rawValue),
                message: "failed without reporting an error", operation: operation)
        }
        return LibvirtError(
            code: error.pointee.code, domain: error.pointee.domain,
            message: error.pointee.message.map { String(cString: $0) } ?? "no message", operation: operation)
    }

    /// Used while the supervisor has no open connection.
    static func notConnected(_ reason: String) -> LibvirtError {
        LibvirtError(
            code: raw(VIR_ERR_NO_CONNECT), domain: Int32(bitPattern: VIR_FROM_NONE.rawValue),
            message: "not connected to libvirt: \(reason)", operation: "connect")
    }

    /// A caller mistake caught before reaching libvirt.
    static func invalidArgument(_ message: String, operation: String) -> LibvirtError {
        LibvirtError(
            code: raw(VIR_ERR_INVALID_ARG), domain: Int32(bitPattern: VIR_FROM_NONE.rawValue), message: message,
            operation: operation)
    }

    /// A thread of ours (event loop, connection worker) could not be started.
    static func threadStart(errno: Errno, what: String = "the connection thread") -> LibvirtError {
        LibvirtError(
            code: raw(VIR_ERR_SYSTEM_ERROR), domain: Int32(bitPattern: VIR_FROM_NONE.rawValue),
            message: "cannot start \(what) (\(errno.description), errno \(errno.rawValue))", operation: "pthread_create")
    }

    private static func raw(_ number: virErrorNumber) -> Int32 { Int32(bitPattern: number.rawValue) }
}
