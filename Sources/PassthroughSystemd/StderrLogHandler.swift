public import Logging

/// Logs readable lines (``LogLine``) when there is no journal: a terminal, a test, a pipe.
public struct StderrLogHandler: LogHandler {
    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    public let label: String
    private let sink: LogLineSink

    public init(label: String, sink: LogLineSink = .standardError, metadataProvider: Logger.MetadataProvider? = nil) {
        self.label = label
        self.sink = sink
        self.metadataProvider = metadataProvider
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        let merged = Logger.Metadata.merged(handler: metadata, provider: metadataProvider, call: event.metadata)
        sink.write(LogLine.format(level: event.level, message: event.message, metadata: merged, error: event.error))
    }
}
