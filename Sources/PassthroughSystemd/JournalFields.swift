public import Logging

/// The journal fields for one log event, as `NAME=value` strings for `sd_journal_sendv`.
///
/// Pure, so the encoding can be tested without a journal.
public enum JournalFields {
    /// Fields this encoder sets itself. A metadata key sanitising to one of these gets
    /// ``JournalFieldName/escapePrefix``, because a second `PRIORITY=` or `MESSAGE=` would make
    /// the entry ambiguous.
    public static let reservedNames: Set<String> = [
        "MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER", "CODE_FILE", "CODE_LINE", "CODE_FUNC",
        "LOGGER_LABEL", "LOGGER_SOURCE", "ERROR",
    ]

    /// - Parameters:
    ///   - identifier: `SYSLOG_IDENTIFIER`, what `journalctl -t` filters on: the program, not
    ///     the logger, so all of the agent's entries share it.
    ///   - label: the logger's label, kept as `LOGGER_LABEL` to tell components apart.
    ///   - source: swift-log's source module, kept as `LOGGER_SOURCE`.
    ///   - metadata: already merged; keys are sanitised, values may span lines (libsystemd
    ///     switches to its binary-safe encoding for values containing a newline).
    /// - Returns: the handler's own fields first, then metadata sorted by field name.
    public static func encode(
        level: Logger.Level,
        message: Logger.Message,
        metadata: Logger.Metadata,
        error: (any Error)? = nil,
        identifier: String,
        label: String,
        source: String,
        file: String,
        function: String,
        line: UInt
    ) -> [String] {
        var fields = [
            "MESSAGE=\(message)",
            "PRIORITY=\(SyslogPriority(level).rawValue)",
            "SYSLOG_IDENTIFIER=\(identifier)",
            "CODE_FILE=\(file)",
            "CODE_LINE=\(line)",
            "CODE_FUNC=\(function)",
            "LOGGER_LABEL=\(label)",
            "LOGGER_SOURCE=\(source)",
        ]
        if let error {
            fields.append("ERROR=\(error)")
        }
        let metadataFields = metadata.map { key, value in
            (name: fieldName(forMetadataKey: key), value: value.description)
        }
        // Sorting by name, then value, keeps the output stable when two keys sanitise alike.
        for field in metadataFields.sorted(by: { ($0.name, $0.value) < ($1.name, $1.value) }) {
            fields.append("\(field.name)=\(field.value)")
        }
        return fields
    }

    /// The journal field a metadata key ends up in.
    public static func fieldName(forMetadataKey key: String) -> String {
        let name = JournalFieldName.sanitize(key)
        return reservedNames.contains(name) ? JournalFieldName.escapePrefix + name : name
    }
}
