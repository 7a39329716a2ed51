// Readable log lines for a terminal, a test or a pipe: the line format and the sink it is written to (as
// swift-log's StreamLogHandler.swift holds its stream beside its handler).

import Logging
import Glibc

/// The human-readable form of a log event, for a terminal or a plain file:
/// `LEVEL [card] message key=value …`.
package enum LogLine {
    /// - Parameter metadata: already merged. The card (``LogMetadataKey/card``, under any key
    ///   that sanitises to it) moves into the brackets; `MESSAGE_ID` is left out because it only
    ///   means something to the journal catalog. Other pairs follow sorted by key, values quoted
    ///   when they contain whitespace, quotes, `=`, backslashes or control characters, so each line
    ///   splits back into pairs.
    public static func format(
        level: Logger.Level,
        message: Logger.Message,
        metadata: Logger.Metadata,
        error: (any Error)? = nil
    ) -> String {
        var line = level.rawValue.uppercased()
        var pairs: [(key: String, value: String)] = []
        var card: String?
        for (key, value) in metadata {
            switch JournalFieldName.sanitize(key) {
            case LogMetadataKey.card: card = value.description
            case LogMetadataKey.messageID: continue
            default: pairs.append((key, value.description))
            }
        }
        if let card {
            line += " [\(card)]"
        }
        line += " \(message)"
        if let error {
            pairs.append(("error", "\(error)"))
        }
        for pair in pairs.sorted(by: { ($0.key, $0.value) < ($1.key, $1.value) }) {
            line += " \(pair.key)=\(quotedIfNeeded(pair.value))"
        }
        return line
    }

    private static func quotedIfNeeded(_ value: String) -> String {
        let needsQuotes = value.isEmpty || value.unicodeScalars.contains {
            $0 == "\"" || $0 == "=" || $0 == "\\" || $0.properties.isWhitespace
                || $0.properties.generalCategory == .control
        }
        guard needsQuotes else { return value }
        var quoted = "\""
        for scalar in value.unicodeScalars {
            if let escape = escapes[scalar] {
                quoted += escape
            } else {
                quoted.unicodeScalars.append(scalar)
            }
        }
        return quoted + "\""
    }

    /// Inside quotes: what would end the value or break the line, backslash-escaped as in C.
    private static let escapes: [Unicode.Scalar: String] = [
        "\"": "\\\"", "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r",
    ]
}

/// Where ``AgentLogHandler`` writes finished lines; tests pass a closure that collects them.
package struct LogLineSink: Sendable {
    private let writeLine: @Sendable (String) -> Void

    public init(_ writeLine: @escaping @Sendable (String) -> Void) {
        self.writeLine = writeLine
    }

    public func write(_ line: String) {
        writeLine(line)
    }

    /// File descriptor 2, one `write` per line so concurrent lines do not interleave
    /// (up to PIPE_BUF bytes on a pipe); retried on EINTR and short writes.
    public static let standardError = LogLineSink { line in
        var bytes = Array((line + "\n").utf8)
        bytes.withUnsafeMutableBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let written = Glibc.write(STDERR_FILENO, buffer.baseAddress! + offset, buffer.count - offset)
                if written > 0 {
                    offset += written
                } else if written < 0 && errno == EINTR {
                    continue
                } else {
                    // Nowhere left to report a failing stderr; drop the line.
                    return
                }
            }
        }
    }
}
