/// Escaping for values placed in XML we send to libvirt.
///
/// Every value goes through here even when its type already restricts it to hex digits: the XML must stay
/// well-formed whatever a future caller passes.
enum XMLEscaping {
    /// Escapes a value for a single- or double-quoted attribute.
    static func attribute(_ value: String) -> String {
        var escaped = ""
        escaped.reserveCapacity(value.utf8.count)
        for scalar in value.unicodeScalars {
            switch scalar {
            case "&": escaped += "&amp;"
            case "<": escaped += "&lt;"
            case ">": escaped += "&gt;"
            case "'": escaped += "&apos;"
            case "\"": escaped += "&quot;"
            // Attribute-value normalisation would turn raw whitespace controls into spaces; keep them exact.
            case "\t", "\n", "\r": escaped += "&#\(scalar.value);"
            default: escaped.unicodeScalars.append(scalar)
            }
        }
        return escaped
    }
}
