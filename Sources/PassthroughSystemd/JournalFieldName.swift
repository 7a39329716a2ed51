/// Turns arbitrary metadata keys into names journald accepts.
///
/// journald keeps a field only if its name is 1–64 characters of `[A-Z0-9_]` and does not start
/// with a digit; names starting with `_` are reserved for fields journald itself adds and are
/// dropped when a client sends them. An invalid name loses the whole field silently, so every
/// key is repaired rather than rejected.
public enum JournalFieldName {
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
