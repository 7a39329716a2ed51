#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import PassthroughCore
import PassthroughSysfs
import SystemPackage

/// A failure of the guard's state directory, with its errno.
public struct GuardStateError: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Operation: String, Hashable, Sendable {
        case createDirectory = "create", write, read, remove, list
        /// The file exists but is not a record we wrote: it is left in place for a human.
        case parse = "parse"
    }

    public var operation: Operation
    public var path: FilePath
    public var errno: Errno?

    public init(_ operation: Operation, path: FilePath, errno: Errno? = nil) {
        self.operation = operation
        self.path = path
        self.errno = errno
    }

    public var description: String {
        let what = "cannot \(operation.rawValue) reflash guard state \(path)"
        return errno.map { "\(what): \($0)" } ?? what
    }
}

/// Where the reflash guard keeps the original register values until they are restored, one
/// file per upstream port: `/run/passthrough-agent/guard/<port>` by default.
///
/// It is not sysfs, so it has its own small door: atomic replace (write, fsync, rename) so a
/// kill -9 at any point leaves either no record or a whole one.
public struct GuardStateStore: Sendable {
    public static let defaultDirectory: FilePath = "/run/passthrough-agent/guard"

    public let directory: FilePath

    public init(directory: FilePath = GuardStateStore.defaultDirectory) {
        self.directory = directory
    }

    public func path(of port: PCIAddress) -> FilePath { directory.appending(port.description) }

    public func save(_ record: GuardRecord) throws(GuardStateError) {
        try makeDirectory()
        let final = path(of: record.port)
        let temporary = directory.appending(".\(record.port).new")
        do {
            let fd = try FileDescriptor.open(
                temporary, .writeOnly, options: [.create, .truncate, .closeOnExec], permissions: .ownerReadWrite)
            try fd.closeAfter {
                _ = try fd.writeAll(Array(record.fileContents.utf8))
                try Self.fsync(fd)
            }
        } catch {
            throw GuardStateError(.write, path: temporary, errno: error as? Errno ?? .ioError)
        }
        let renamed = temporary.withPlatformString { from in final.withPlatformString { to in rename(from, to) } }
        if renamed != 0 { throw GuardStateError(.write, path: final, errno: Errno(rawValue: errno)) }
    }

    /// The record for `port`, or `nil` when the guard is not engaged there.
    public func load(_ port: PCIAddress) throws(GuardStateError) -> GuardRecord? {
        let file = path(of: port)
        let text: String
        do {
            text = try LinuxSysfsIO().read(file)
        } catch where error.isNotFound {
            return nil
        } catch {
            throw GuardStateError(.read, path: file, errno: error.errno)
        }
        guard let record = GuardRecord(fileContents: text), record.port == port else {
            throw GuardStateError(.parse, path: file)
        }
        return record
    }

    /// Ports with a record; temporary files and foreign names are skipped.
    public func ports() throws(GuardStateError) -> [PCIAddress] {
        guard LinuxSysfsIO().exists(directory) else { return [] }
        do {
            return try LinuxSysfsIO().list(directory).compactMap(PCIAddress.init)
        } catch {
            throw GuardStateError(.list, path: directory, errno: error.errno)
        }
    }

    public func remove(_ port: PCIAddress) throws(GuardStateError) {
        let file = path(of: port)
        if file.withPlatformString({ unlink($0) }) != 0, errno != ENOENT {
            throw GuardStateError(.remove, path: file, errno: Errno(rawValue: errno))
        }
    }

    private func makeDirectory() throws(GuardStateError) {
        var current = FilePath(root: directory.root)
        for component in directory.components {
            current.append(component)
            if current.withPlatformString({ mkdir($0, 0o700) }) != 0, errno != EEXIST {
                throw GuardStateError(.createDirectory, path: current, errno: Errno(rawValue: errno))
            }
        }
    }

    private static func fsync(_ fd: FileDescriptor) throws(Errno) {
        while Glibc.fsync(fd.rawValue) != 0 {
            let code = Errno(rawValue: errno)
            if code != .interrupted { throw code }
        }
    }
}
