/// Hexadecimal as the kernel and libvirt spell it: strict parsing for the fixed-width fields of PCI names
/// and sysfs numbers, and the one zero-padded formatter every module prints with.
///
/// `UInt(_:radix:)` accepts a sign and any width; names that become sysfs paths must not.
package enum Hex {
    static func isDigit(_ byte: UInt8) -> Bool {
        (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x46) || (byte >= 0x61 && byte <= 0x66)
    }

    static func value(_ byte: UInt8) -> UInt32 {
        switch byte {
        case 0x30...0x39: UInt32(byte - 0x30)
        case 0x41...0x46: UInt32(byte - 0x41 + 10)
        default: UInt32(byte - 0x61 + 10)
        }
    }

    /// Parses exactly `width` hex digits, nothing else.
    static func fixedWidth(_ text: Substring.UTF8View, width: Int) -> UInt32? {
        guard text.count == width else { return nil }
        var result: UInt32 = 0
        for byte in text {
            guard isDigit(byte) else { return nil }
            result = result << 4 | value(byte)
        }
        return result
    }

    /// A PCI domain as the kernel prints it (`%04x` of 32 bits): four digits, or five to eight without a
    /// leading zero, so that each domain has exactly one spelling (`10000`, never `010000`).
    static func domain(_ text: Substring.UTF8View) -> UInt32? {
        guard (4...8).contains(text.count), text.count == 4 || text.first != UInt8(ascii: "0") else { return nil }
        return fixedWidth(text, width: text.count)
    }

    /// Parses sysfs numeric attributes such as `0x10ee` or `0x058000`, with or without the prefix.
    package static func sysfsNumber(_ text: String) -> UInt32? {
        var body = Substring(text).drop { $0 == " " || $0 == "\t" }
        while let last = body.last, last == "\n" || last == " " || last == "\t" { body = body.dropLast() }
        if body.hasPrefix("0x") || body.hasPrefix("0X") { body = body.dropFirst(2) }
        guard !body.isEmpty, body.utf8.count <= 8 else { return nil }
        return fixedWidth(body.utf8, width: body.utf8.count)
    }

    /// Lower-case digits, zero-padded to `width` (`format(0x9038, width: 8)` is `00009038`), no prefix.
    package static func format(_ value: some BinaryInteger, width: Int) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: max(0, width - digits.count)) + digits
    }

    /// What sysfs, libvirt and the state files write: `0x` and zero-padded lower-case digits.
    package static func prefixed(_ value: some BinaryInteger, width: Int) -> String {
        "0x" + format(value, width: width)
    }
}

/// sysfs prints numbers as `0x058000\n`; the adapters parse them with the core's strict rules.
public enum SysfsNumber {
    public static func parse(_ text: String) -> UInt32? { Hex.sysfsNumber(text) }
}
