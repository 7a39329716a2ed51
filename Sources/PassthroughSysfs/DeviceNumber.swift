/// A character device's number, `major:minor`: what identifies the device behind an open file.
///
/// The agent never opens or names device nodes (its unit has `PrivateDevices=yes`, and a path in `/dev` is
/// only a name someone chose). It compares numbers: the one sysfs gives a device in its `dev` attribute
/// with the one `stat` reports for a file another process holds open.
public struct DeviceNumber: Hashable, Sendable, CustomStringConvertible {
    public var major: UInt32
    public var minor: UInt32

    public init(major: UInt32, minor: UInt32) {
        self.major = major
        self.minor = minor
    }

    /// Parses a sysfs `dev` attribute: `MAJ:MIN` in decimal, with the kernel's trailing newline.
    public init?(sysfsText text: String) {
        let parts = text.trimmingSysfsNewline().split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2, let major = Self.decimal(parts[0]), let minor = Self.decimal(parts[1]) else {
            return nil
        }
        self.init(major: major, minor: minor)
    }

    /// Decodes `st_rdev` as glibc encodes `dev_t` (`gnu_dev_major`/`gnu_dev_minor`): the low 8 bits of the
    /// minor, then 12 bits of major, then the rest of the minor, then the rest of the major.
    public init(rawValue: UInt64) {
        major = UInt32(truncatingIfNeeded: ((rawValue >> 8) & 0xfff) | ((rawValue >> 32) & ~UInt64(0xfff)))
        minor = UInt32(truncatingIfNeeded: (rawValue & 0xff) | ((rawValue >> 12) & ~UInt64(0xff)))
    }

    public var description: String { "\(major):\(minor)" }

    private static func decimal(_ text: Substring) -> UInt32? {
        guard !text.isEmpty, text.utf8.allSatisfy({ (0x30...0x39).contains($0) }) else { return nil }
        return UInt32(text)
    }
}
