// Which log handler the agent uses: the journal when systemd connected stderr to it, else readable stderr.

public import Logging
internal import Glibc

/// Builds the agent's log handlers; pass to `LoggingSystem.bootstrap` once, in `main`.
public enum LogHandlers {
    /// Decided once per process: where stderr points does not change while it runs.
    public static let destination = LogDestination.detect()

    public static func make(label: String) -> any LogHandler {
        make(label: label, metadataProvider: nil)
    }

    public static func make(label: String, metadataProvider: Logger.MetadataProvider?) -> any LogHandler {
        make(label: label, metadataProvider: metadataProvider, destination: destination)
    }

    public static func make(
        label: String,
        metadataProvider: Logger.MetadataProvider?,
        destination: LogDestination
    ) -> any LogHandler {
        switch destination {
        case .journal: JournalLogHandler(label: label, metadataProvider: metadataProvider)
        case .standardError: StderrLogHandler(label: label, metadataProvider: metadataProvider)
        }
    }
}

/// Where the agent's logs should go.
public enum LogDestination: Hashable, Sendable {
    case journal
    case standardError

    /// The journal when stderr is already connected to it, i.e. when systemd started us with
    /// `StandardError=journal` (the default): it then sets `JOURNAL_STREAM=<dev>:<inode>` of that
    /// stream, and systemd.exec(5) recommends switching to the native protocol on a match.
    /// Everything else (a terminal, a pipe, a file, a child that merely inherited the variable)
    /// keeps readable stderr, and so does a machine without journald.
    public static func choose(
        journalSocketExists: Bool,
        journalStream: String?,
        standardErrorIdentity: FileIdentity?
    ) -> LogDestination {
        guard journalSocketExists, let journalStream, let standardErrorIdentity,
              FileIdentity(journalStream: journalStream) == standardErrorIdentity
        else { return .standardError }
        return .journal
    }

    /// ``choose(journalSocketExists:journalStream:standardErrorIdentity:)`` for this process.
    public static func detect() -> LogDestination {
        choose(
            journalSocketExists: access(journalSocketPath, F_OK) == 0,
            journalStream: getenv("JOURNAL_STREAM").map { String(cString: $0) },
            standardErrorIdentity: FileIdentity(descriptor: STDERR_FILENO)
        )
    }

    /// journald's native-protocol socket, which `sd_journal_sendv` writes to.
    public static let journalSocketPath = "/run/systemd/journal/socket"
}

/// Device and inode of an open file, the pair `JOURNAL_STREAM` carries.
public struct FileIdentity: Hashable, Sendable {
    public var device: UInt64
    public var inode: UInt64

    public init(device: UInt64, inode: UInt64) {
        self.device = device
        self.inode = inode
    }

    /// Parses `JOURNAL_STREAM`'s `<device>:<inode>` (both decimal).
    public init?(journalStream: String) {
        let parts = journalStream.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2, let device = UInt64(parts[0]), let inode = UInt64(parts[1]) else {
            return nil
        }
        self.init(device: device, inode: inode)
    }

    init?(descriptor: Int32) {
        var status = stat()
        guard fstat(descriptor, &status) == 0 else { return nil }
        self.init(device: UInt64(status.st_dev), inode: UInt64(status.st_ino))
    }
}
