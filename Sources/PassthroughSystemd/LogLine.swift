public import Logging

/// The human-readable form of a log event, for a terminal or a plain file:
/// `LEVEL [card] message key=value …`.
public enum LogLine {
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
            switch scalar {
            case "\"": quoted += "\\\""
            case "\\": quoted += "\\\\"
            case "\n": quoted += "\\n"
            case "\t": quoted += "\\t"
            case "\r": quoted += "\\r"
            default: quoted.unicodeScalars.append(scalar)
            }
        }
        return quoted + "\""
    }
}
