import SystemPackage

/// A sysfs read or write that the kernel refused, with the errno it gave.
public struct SysfsError: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Operation: String, Hashable, Sendable {
        case read, write, readLink = "read link", list, stat
    }

    public var operation: Operation
    public var path: FilePath
    public var errno: Errno
    /// What was written, for writes.
    public var value: String?

    public init(operation: Operation, path: FilePath, errno: Errno, value: String? = nil) {
        self.operation = operation
        self.path = path
        self.errno = errno
        self.value = value
    }

    public var isNotFound: Bool { errno == .noSuchFileOrDirectory }

    /// The object is no longer there: its file vanished (ENOENT), or the device was removed under an
    /// open file (ENODEV).
    public var isGone: Bool { errno == .noSuchFileOrDirectory || errno == .operationNotSupportedByDevice }  // ENODEV

    public var description: String {
        let what = value.map { "write \"\($0)\" to" } ?? operation.rawValue
        return "cannot \(what) \(path): \(errno.description) (errno \(errno.rawValue))"
    }
}
