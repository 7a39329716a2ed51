// The agent's one log handler and where it writes: the journal when systemd connected stderr to it, else
// readable lines on stderr. swift-log's bookkeeping (level, metadata, provider, their merge) is written once,
// here; the journal's fields are `JournalFields.swift`, the readable line `LogLine.swift`.

import Logging
import Glibc

/// The agent's `LogHandler`: merges metadata as swift-log's own handlers do, then writes the event to its
/// ``Output``.
package struct AgentLogHandler: LogHandler {
    package enum Output: Sendable {
        /// Structured entries straight to journald (native protocol, not stderr), so metadata becomes
        /// searchable fields and `MESSAGE_ID` links entries to the catalog (see ``JournalFields``).
        /// `identifier` is every entry's `SYSLOG_IDENTIFIER=`; an entry journald refuses goes to
        /// `fallback` as a line, so nothing is lost silently.
        case journal(identifier: String, fallback: LogLineSink)
        /// Readable lines (``LogLine``) when there is no journal: a terminal, a test, a pipe.
        case lines(LogLineSink)
    }

    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    public let label: String
    package let output: Output

    public static let defaultIdentifier = "passthrough-agent"

    package init(label: String, output: Output, metadataProvider: Logger.MetadataProvider? = nil) {
        self.label = label
        self.output = output
        self.metadataProvider = metadataProvider
    }

    /// To journald, as `identifier`.
    package static func journal(
        label: String,
        identifier: String = defaultIdentifier,
        metadataProvider: Logger.MetadataProvider? = nil,
        fallback: LogLineSink = .standardError
    ) -> AgentLogHandler {
        AgentLogHandler(label: label, output: .journal(identifier: identifier, fallback: fallback),
                        metadataProvider: metadataProvider)
    }

    /// Readable lines to `sink`.
    package static func lines(
        label: String, sink: LogLineSink = .standardError, metadataProvider: Logger.MetadataProvider? = nil
    ) -> AgentLogHandler {
        AgentLogHandler(label: label, output: .lines(sink), metadataProvider: metadataProvider)
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        let merged = Logger.Metadata.merged(handler: metadata, provider: metadataProvider, call: event.metadata)
        switch output {
        case .lines(let sink):
            sink.write(LogLine.format(level: event.level, message: event.message, metadata: merged, error: event.error))
        case .journal(let identifier, let fallback):
            let fields = JournalFields.encode(
                level: event.level, message: event.message, metadata: merged, error: event.error,
                identifier: identifier, label: label, source: event.source,
                file: event.file, function: event.function, line: event.line
            )
            let result = JournalTransport.send(fields)
            if result < 0 {
                let line = LogLine.format(level: event.level, message: event.message, metadata: merged, error: event.error)
                fallback.write("\(line) journal_errno=\(-result)")
            }
        }
    }
}

extension Logger.Metadata {
    /// The metadata a handler logs: its own, overridden by the provider's (task-local context),
    /// overridden by the call's, which is the order swift-log's handlers use.
    static func merged(
        handler: Logger.Metadata,
        provider: Logger.MetadataProvider?,
        call: Logger.Metadata?
    ) -> Logger.Metadata {
        var merged = handler
        if let provided = provider?.get() {
            merged.merge(provided) { _, new in new }
        }
        if let call {
            merged.merge(call) { _, new in new }
        }
        return merged
    }
}

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
        case .journal: AgentLogHandler.journal(label: label, metadataProvider: metadataProvider)
        case .standardError: AgentLogHandler.lines(label: label, metadataProvider: metadataProvider)
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
