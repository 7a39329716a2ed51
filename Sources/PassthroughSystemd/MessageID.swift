/// A journal `MESSAGE_ID=`: 128 bits as 32 lowercase hex digits, the key into the catalog.
public struct MessageID: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: String

    /// Nil unless `rawValue` is exactly 32 lowercase hex digits, the only form journalctl's
    /// catalog lookup matches.
    public init?(rawValue: String) {
        guard rawValue.utf8.count == 32,
              rawValue.utf8.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0)
                  || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains($0) })
        else { return nil }
        self.rawValue = rawValue
    }

    public var description: String { rawValue }
}
