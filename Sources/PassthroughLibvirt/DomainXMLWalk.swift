// Reading a <domain> document: the walk every live-XML reader goes through, and the error any of them raises.

/// Walks the elements of one `<domain>` document with their paths from the root, checking what every reader of
/// live XML relies on: a single `<domain>` root, every end tag closing the element it should, nothing after the
/// end. What the readers look for is theirs; the shape of the document is checked here once.
enum DomainXMLWalk {
    enum Step {
        /// An element opens; `path` ends with its name.
        case open(path: [String], attributes: [String: String])
        /// An element closes (right after its `open` when self-closing); `path` still ends with its name.
        case close(path: [String])
    }

    /// Calls `visit` for every step, with the scanner's byte offset for error messages.
    static func walk(
        _ xml: String, _ visit: (Step, _ offset: Int) throws(DomainXMLError) -> Void
    ) throws(DomainXMLError) {
        var scanner = XMLScanner(xml)
        var path: [String] = []
        var sawRoot = false
        while let token = try scanner.next() {
            switch token {
            case .start(let name, let attributes, let selfClosing):
                if path.isEmpty {
                    guard !sawRoot, name == "domain" else {
                        throw DomainXMLError("expected a single <domain> root, found <\(name)>", at: scanner.offset)
                    }
                    sawRoot = true
                }
                path.append(name)
                try visit(.open(path: path, attributes: attributes), scanner.offset)
                if selfClosing {
                    try visit(.close(path: path), scanner.offset)
                    path.removeLast()
                }
            case .end(let name):
                guard path.last == name else {
                    throw DomainXMLError("</\(name)> does not close <\(path.last ?? "")>", at: scanner.offset)
                }
                try visit(.close(path: path), scanner.offset)
                path.removeLast()
            }
        }
        guard sawRoot, path.isEmpty else { throw DomainXMLError("document ended early", at: scanner.offset) }
    }
}

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
