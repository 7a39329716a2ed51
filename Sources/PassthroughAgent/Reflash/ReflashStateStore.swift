#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import PassthroughCore
import PassthroughSysfs
import SystemPackage

/// A failure of the reflash state directory, with its errno.
public struct ReflashStateError: Error, Hashable, Sendable, CustomStringConvertible {
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
        let what = "cannot \(operation.rawValue) reflash state \(path)"
        return errno.map { "\(what): \($0)" } ?? what
    }
}

/// Where each card's reflash state (and the guard's saved registers) lives while it is anything
/// but placed: one file per card, `/run/passthrough-agent/cards/<card>` by default. The unit keeps
/// `/run/passthrough-agent` across restarts and stops (`RuntimeDirectoryPreserve=yes`), so a held
/// card stays held, guard and all, until `--finish` or the next boot.
///
/// Not sysfs, so it has its own small door: atomic replace (write, fsync, rename, fsync the directory),
/// so a kill -9 at any point leaves either the old record or the new one, never half of one.
public struct ReflashStateStore: Sendable {
    public static let defaultDirectory: FilePath = "/run/passthrough-agent/cards"

    public let directory: FilePath

    public init(directory: FilePath = ReflashStateStore.defaultDirectory) {
        self.directory = directory
    }

    public func path(of card: CardName) -> FilePath { directory.appending(card.rawValue) }

    /// Writes `state` (and a `while-lent` guard held for the card) for `card`, or removes the file when the
    /// card is placed again with nothing held.
    public func save(_ state: ReflashState, lentGuard: GuardRecord? = nil, of card: CardName) throws(ReflashStateError) {
        guard let contents = ReflashRecord(state: state.persisted, lentGuard: lentGuard)?.fileContents else {
            try remove(card)
            return
        }
        try makeDirectory()
        let final = path(of: card)
        let temporary = directory.appending(".\(card.rawValue).new")
        do {
            let fd = try FileDescriptor.open(
                temporary, .writeOnly, options: [.create, .truncate, .closeOnExec], permissions: .ownerReadWrite)
            try fd.closeAfter {
                _ = try fd.writeAll(Array(contents.utf8))
                try Self.fsync(fd)
            }
        } catch {
            throw ReflashStateError(.write, path: temporary, errno: error as? Errno ?? .ioError)
        }
        let renamed = temporary.withPlatformString { from in final.withPlatformString { to in rename(from, to) } }
        if renamed != 0 { throw ReflashStateError(.write, path: final, errno: Errno(rawValue: errno)) }
        syncDirectory()
    }

    /// The persisted state of `card`; `.placed` when there is no record.
    public func load(_ card: CardName) throws(ReflashStateError) -> ReflashState {
        try resume(card).state
    }

    /// The card's state machine as the last process left it: its reflash state and a `while-lent` guard it held.
    public func resume(_ card: CardName) throws(ReflashStateError) -> ReflashStateMachine {
        let file = path(of: card)
        let text: String
        do {
            text = try LinuxSysfsIO().read(file)
        } catch where error.isNotFound {
            return ReflashStateMachine()
        } catch {
            throw ReflashStateError(.read, path: file, errno: error.errno)
        }
        guard let record = ReflashRecord(fileContents: text) else { throw ReflashStateError(.parse, path: file) }
        return ReflashStateMachine(resuming: record.state, lentGuard: record.lentGuard)
    }

    /// Cards with a record; temporary files and foreign names are skipped.
    public func cards() throws(ReflashStateError) -> [CardName] {
        guard LinuxSysfsIO().exists(directory) else { return [] }
        do {
            return try LinuxSysfsIO().list(directory).compactMap(CardName.init)
        } catch {
            throw ReflashStateError(.list, path: directory, errno: error.errno)
        }
    }

    public func remove(_ card: CardName) throws(ReflashStateError) {
        let file = path(of: card)
        if file.withPlatformString({ unlink($0) }) != 0, errno != ENOENT {
            throw ReflashStateError(.remove, path: file, errno: Errno(rawValue: errno))
        }
    }

    private func makeDirectory() throws(ReflashStateError) {
        var current = FilePath(root: directory.root)
        for component in directory.components {
            current.append(component)
            if current.withPlatformString({ mkdir($0, 0o700) }) != 0, errno != EEXIST {
                throw ReflashStateError(.createDirectory, path: current, errno: Errno(rawValue: errno))
            }
        }
    }

    /// The rename is durable only once the directory is; /run is tmpfs, but a test or a packager may
    /// point this elsewhere.
    private func syncDirectory() {
        guard let fd = try? FileDescriptor.open(directory, .readOnly, options: [.directory, .closeOnExec]) else { return }
        _ = try? fd.closeAfter { try Self.fsync(fd) }
    }

    private static func fsync(_ fd: FileDescriptor) throws(Errno) {
        while Glibc.fsync(fd.rawValue) != 0 {
            let code = Errno(rawValue: errno)
            if code != .interrupted { throw code }
        }
    }
}
