import Logging
import Synchronization

/// Log lines kept in memory, so tests can check what the monitor logged.
final class LogStore: Sendable {
    private let lines = Mutex<[String]>([])

    var all: [String] { lines.withLock { $0 } }

    func append(_ line: String) { lines.withLock { $0.append(line) } }

    func contains(_ text: String) -> Bool { all.contains { $0.contains(text) } }

    /// A logger writing into this store at `debug` level.
    func logger() -> Logger {
        Logger(label: "udev-test") { _ in CapturingLogHandler(store: self) }
    }
}

struct CapturingLogHandler: LogHandler {
    let store: LogStore
    var logLevel: Logger.Level = .debug
    var metadata: Logger.Metadata = [:]
    var metadataProvider: Logger.MetadataProvider?

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        store.append("\(event.level) \(event.message)")
    }
}
