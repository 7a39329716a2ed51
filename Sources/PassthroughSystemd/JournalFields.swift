// What journald receives for one log event: its fields (names journald accepts, syslog priorities) and the
// sd_journal_sendv transport. ``AgentLogHandler`` hands them over.

import Logging
internal import CSystemd
import Glibc

/// The journal fields for one log event, as `NAME=value` strings for `sd_journal_sendv`.
///
/// Pure, so the encoding can be tested without a journal.
package enum JournalFields {
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

/// Turns arbitrary metadata keys into names journald accepts.
///
/// journald keeps a field only if its name is 1–64 characters of `[A-Z0-9_]` and does not start
/// with a digit; names starting with `_` are reserved for fields journald itself adds and are
/// dropped when a client sends them. An invalid name loses the whole field silently, so every
/// key is repaired rather than rejected.
package enum JournalFieldName {
    public static let maximumLength = 64

    /// Prefix for keys that would otherwise be invalid or clash with fields the handler sets.
    public static let escapePrefix = "META_"

    /// `pci-slot` → `PCI_SLOT`, `message-id` → `MESSAGE_ID`, `_pid` → `META__PID`, `9x` → `META_9X`.
    public static func sanitize(_ key: String) -> String {
        var name = String(String.UnicodeScalarView(key.unicodeScalars.map(repair)))
        if !isValidStart(name.unicodeScalars.first) {
            name = escapePrefix + name
        }
        return String(name.prefix(maximumLength))
    }

    /// Whether journald would keep a field with this name as sent.
    public static func isValid(_ name: String) -> Bool {
        name.unicodeScalars.count <= maximumLength && isValidStart(name.unicodeScalars.first)
            && name.unicodeScalars.allSatisfy(isAllowed)
    }

    private static func isValidStart(_ first: Unicode.Scalar?) -> Bool {
        guard let first else { return false }
        return first != "_" && !("0"..."9").contains(first)
    }

    private static func repair(_ scalar: Unicode.Scalar) -> Unicode.Scalar {
        if ("a"..."z").contains(scalar) { return Unicode.Scalar(scalar.value - 0x20)! }
        return isAllowed(scalar) ? scalar : "_"
    }

    private static func isAllowed(_ scalar: Unicode.Scalar) -> Bool {
        ("A"..."Z").contains(scalar) || ("0"..."9").contains(scalar) || scalar == "_"
    }
}

/// The journal's `PRIORITY=` values (syslog severities, 0 = most severe).
package enum SyslogPriority: Int, Sendable, CaseIterable {
    case emergency = 0
    case alert = 1
    case critical = 2
    case error = 3
    case warning = 4
    case notice = 5
    case info = 6
    case debug = 7

    /// swift-log has no emergency or alert level: those mean the whole machine is unusable,
    /// which the agent cannot judge. `trace` is finer than syslog goes and becomes debug.
    public init(_ level: Logger.Level) {
        switch level {
        case .trace, .debug: self = .debug
        case .info: self = .info
        case .notice: self = .notice
        case .warning: self = .warning
        case .error: self = .error
        case .critical: self = .critical
        }
    }
}

/// Hands encoded fields to journald.
///
/// Uses `sd_journal_sendv` because the variadic `sd_journal_send` is not callable from Swift.
/// All fields go into one buffer with explicit lengths, so values may contain anything,
/// including newlines (libsystemd then sends them in its binary-safe form).
enum JournalTransport {
    /// - Returns: 0, or `-errno`. libsystemd reports 0 as well when no journald listens
    ///   (it drops the entry on ENOENT), so 0 does not prove delivery.
    static func send(_ fields: [String]) -> Int32 {
        var buffer: [UInt8] = []
        var spans: [(offset: Int, length: Int)] = []
        buffer.reserveCapacity(fields.reduce(0) { $0 + $1.utf8.count })
        for field in fields {
            spans.append((buffer.count, field.utf8.count))
            buffer.append(contentsOf: field.utf8)
        }
        guard !spans.isEmpty else { return 0 }
        return buffer.withUnsafeMutableBytes { bytes in
            // A field of zero length still needs a valid pointer; the buffer is never empty
            // here because every field contains at least "NAME=".
            let base = bytes.baseAddress!
            let vectors = spans.map { iovec(iov_base: base + $0.offset, iov_len: $0.length) }
            return vectors.withUnsafeBufferPointer { sd_journal_sendv($0.baseAddress, Int32($0.count)) }
        }
    }
}
