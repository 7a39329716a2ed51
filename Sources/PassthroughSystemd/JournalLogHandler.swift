public import Logging

/// Logs structured entries straight to journald (native protocol, not stderr), so metadata
/// becomes searchable fields and `MESSAGE_ID` links entries to the catalog.
///
/// Every metadata key becomes a field (see ``JournalFields``). If journald refuses an entry the
/// line goes to `fallback` instead, so nothing is lost silently.
public struct JournalLogHandler: LogHandler {
    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    public let label: String
    /// `SYSLOG_IDENTIFIER=` of every entry.
    public let identifier: String
    private let fallback: LogLineSink

    public static let defaultIdentifier = "passthrough-agent"

    public init(
        label: String,
        identifier: String = JournalLogHandler.defaultIdentifier,
        metadataProvider: Logger.MetadataProvider? = nil,
        fallback: LogLineSink = .standardError
    ) {
        self.label = label
        self.identifier = identifier
        self.metadataProvider = metadataProvider
        self.fallback = fallback
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        let merged = Logger.Metadata.merged(handler: metadata, provider: metadataProvider, call: event.metadata)
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
