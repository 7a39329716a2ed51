/// Durations as the config writes them: a whole number and a unit, `"500ms"`, `"1s"`, `"2m"`, `"1h"`.
///
/// Deliberately narrow (no fractions, no compound forms like `"1m30s"`): one obvious spelling per
/// value keeps config files greppable and errors easy to explain.
public enum ConfigDuration {
    /// The units accepted, in the order they are listed in error messages.
    public static let units = ["ms", "s", "m", "h"]

    /// `nil` for anything that is not `<digits><unit>`, or that overflows.
    public static func parse(_ text: String) -> Duration? {
        let digits = text.prefix { $0.isASCII && $0.isNumber }
        let unit = text.dropFirst(digits.count)
        guard !digits.isEmpty, digits.count <= 9, let value = Int64(digits) else { return nil }
        switch unit {
        case "ms": return .milliseconds(value)
        case "s": return .seconds(value)
        case "m": return .seconds(value * 60)
        case "h": return .seconds(value * 3600)
        default: return nil
        }
    }

    /// The shortest exact config spelling of `duration` (`.seconds(120)` is `"2m"`).
    public static func format(_ duration: Duration) -> String {
        let milliseconds = duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000
        if milliseconds % 1000 != 0 { return "\(milliseconds)ms" }
        let seconds = milliseconds / 1000
        if seconds != 0, seconds % 3600 == 0 { return "\(seconds / 3600)h" }
        if seconds != 0, seconds % 60 == 0 { return "\(seconds / 60)m" }
        return "\(seconds)s"
    }
}
