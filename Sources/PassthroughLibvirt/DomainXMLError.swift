/// Domain XML that could not be read: malformed, or a PCI hostdev without a readable source address.
public struct DomainXMLError: Error, Hashable, Sendable, CustomStringConvertible {
    public let message: String
    /// Byte offset into the document where reading stopped.
    public let offset: Int

    public init(_ message: String, at offset: Int) {
        self.message = message
        self.offset = offset
    }

    public var description: String { "domain XML: \(message) at byte \(offset)" }
}
