import Foundation
import Logging
import PassthroughSystemd

/// stdout for results, stderr for diagnostics.
enum Output {
    /// For the commands that print their own results (`plan`, `monitor`): the libraries' errors on stderr,
    /// the rest of their chatter dropped.
    static func errorLogger(_ label: String) -> Logger {
        Logger(label: label) { label in
            var handler = AgentLogHandler.lines(label: label)
            handler.logLevel = .error
            return handler
        }
    }

    static func print(_ text: String) {
        FileHandle.standardOutput.write(Data(text.utf8))
    }

    static func error(_ text: String) {
        FileHandle.standardError.write(Data((text.hasSuffix("\n") ? text : text + "\n").utf8))
    }

    /// One compact object per line, flushed at once: `monitor --json | jq` sees events as they come.
    static func jsonLine(_ value: some Encodable) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        guard let data = try? encoder.encode(value) else { return }
        FileHandle.standardOutput.write(data + Data("\n".utf8))
    }

    static func json<Value: Encodable>(_ value: Value) throws {
        if let array = value as? [any Encodable], array.isEmpty {
            FileHandle.standardOutput.write(Data("[]\n".utf8))
            return
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let data = try encoder.encode(value)
        FileHandle.standardOutput.write(data)
        FileHandle.standardOutput.write(Data("\n".utf8))
    }
}
