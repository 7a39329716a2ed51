public import Logging

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
