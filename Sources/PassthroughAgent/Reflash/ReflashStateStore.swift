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

    init(_ failure: StateFile.Failure) {
        let operation: Operation = switch failure.step {
        case .createDirectory: .createDirectory
        case .write: .write
        case .remove: .remove
        }
        self.init(operation, path: failure.path, errno: failure.errno)
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
/// Each record is replaced whole (``StateFile``): a kill -9 at any point leaves the old record or the new one.
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
        do throws(StateFile.Failure) {
            try StateFile.replace(path(of: card), with: contents)
        } catch {
            throw ReflashStateError(error)
        }
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
        do throws(StateFile.Failure) {
            try StateFile.remove(path(of: card))
        } catch {
            throw ReflashStateError(error)
        }
    }
}
