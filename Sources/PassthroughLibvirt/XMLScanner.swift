/// A small pull scanner over the well-formed XML libvirt writes: start and end tags with their attributes.
///
/// Enough for domain XML, which uses no DTD and no namespaces that matter here; text, comments, processing
/// instructions and CDATA are skipped. Anything it does not understand is an error rather than a guess, so
/// a device can never be invented or hidden by odd input. Entities in attribute values are decoded.
struct XMLScanner {
    enum Token: Equatable {
        case start(name: String, attributes: [String: String], selfClosing: Bool)
        case end(name: String)
    }

    private let bytes: [UInt8]
    private var position = 0

    init(_ text: String) {
        bytes = Array(text.utf8)
    }

    var offset: Int { position }

    /// The next tag, or `nil` at the end of the document.
    mutating func next() throws(DomainXMLError) -> Token? {
        while true {
            // Text between tags: libvirt escapes `<` inside text, so the next `<` starts markup.
            while position < bytes.count, bytes[position] != ASCII.lessThan { position += 1 }
            guard position < bytes.count else { return nil }
            if try skipNonElementMarkup() { continue }
            position += 1
            if peek() == ASCII.slash {
                position += 1
                let name = try readName()
                skipWhitespace()
                try expect(ASCII.greaterThan, "'>' after end tag name")
                return .end(name: name)
            }
            return try readStartTag()
        }
    }

    // MARK: - Markup that is not an element

    /// Skips `<?…?>`, `<!--…-->`, `<![CDATA[…]]>` and `<!DOCTYPE …>`; `false` if `position` starts an element tag.
    private mutating func skipNonElementMarkup() throws(DomainXMLError) -> Bool {
        if hasPrefix("<?") { try skip(past: "?>"); return true }
        if hasPrefix("<!--") { try skip(past: "-->"); return true }
        if hasPrefix("<![CDATA[") { try skip(past: "]]>"); return true }
        if hasPrefix("<!") {
            // A DOCTYPE with an internal subset could declare entities; libvirt never writes one.
            let end = bytes[position...].firstIndex(of: ASCII.greaterThan)
            if let end, !bytes[position..<end].contains(ASCII.openBracket) {
                position = end + 1
                return true
            }
            throw DomainXMLError("unsupported declaration", at: position)
        }
        return false
    }

    // MARK: - Start tags

    private mutating func readStartTag() throws(DomainXMLError) -> Token {
        let name = try readName()
        var attributes: [String: String] = [:]
        while true {
            let hadSpace = skipWhitespace()
            switch peek() {
            case ASCII.greaterThan:
                position += 1
                return .start(name: name, attributes: attributes, selfClosing: false)
            case ASCII.slash:
                position += 1
                try expect(ASCII.greaterThan, "'>' after '/'")
                return .start(name: name, attributes: attributes, selfClosing: true)
            case nil:
                throw DomainXMLError("unterminated tag <\(name)>", at: position)
            default:
                guard hadSpace else { throw DomainXMLError("expected whitespace before attribute", at: position) }
                let attributeStart = position
                let attribute = try readName()
                skipWhitespace()
                try expect(ASCII.equals, "'=' after attribute name")
                skipWhitespace()
                let value = try readAttributeValue()
                guard attributes.updateValue(value, forKey: attribute) == nil else {
                    throw DomainXMLError("duplicate attribute '\(attribute)'", at: attributeStart)
                }
            }
        }
    }

    private mutating func readName() throws(DomainXMLError) -> String {
        let start = position
        while let byte = peek(), ASCII.isNameByte(byte) { position += 1 }
        guard position > start, !ASCII.isDigit(bytes[start]), bytes[start] != ASCII.hyphen, bytes[start] != ASCII.dot
        else { throw DomainXMLError("expected a name", at: start) }
        return String(decoding: bytes[start..<position], as: UTF8.self)
    }

    private mutating func readAttributeValue() throws(DomainXMLError) -> String {
        guard let quote = peek(), quote == ASCII.apostrophe || quote == ASCII.quote else {
            throw DomainXMLError("expected a quoted attribute value", at: position)
        }
        position += 1
        var value: [UInt8] = []
        while true {
            guard let byte = peek() else { throw DomainXMLError("unterminated attribute value", at: position) }
            switch byte {
            case quote:
                position += 1
                return String(decoding: value, as: UTF8.self)
            case ASCII.lessThan:
                throw DomainXMLError("'<' in attribute value", at: position)
            case ASCII.ampersand:
                value += try readEntity()
            default:
                value.append(byte)
                position += 1
            }
        }
    }

    /// Decodes `&name;` or `&#…;` at `position` into UTF-8.
    private mutating func readEntity() throws(DomainXMLError) -> [UInt8] {
        let start = position
        guard let semicolon = bytes[position...].prefix(12).firstIndex(of: ASCII.semicolon) else {
            throw DomainXMLError("unterminated entity", at: start)
        }
        let body = String(decoding: bytes[(position + 1)..<semicolon], as: UTF8.self)
        position = semicolon + 1
        switch body {
        case "lt": return [ASCII.lessThan]
        case "gt": return [ASCII.greaterThan]
        case "amp": return [ASCII.ampersand]
        case "apos": return [ASCII.apostrophe]
        case "quot": return [ASCII.quote]
        default:
            let number: UInt32?
            if body.hasPrefix("#x") {
                number = UInt32(body.dropFirst(2), radix: 16)
            } else if body.hasPrefix("#") {
                number = UInt32(body.dropFirst(), radix: 10)
            } else {
                number = nil
            }
            // `UInt32(_:radix:)` accepts a sign; a character reference never has one.
            guard let number, !body.contains("+"), !body.contains("-"), number != 0,
                  let scalar = Unicode.Scalar(number)
            else { throw DomainXMLError("unknown entity '&\(body);'", at: start) }
            return Array(String(Character(scalar)).utf8)
        }
    }

    // MARK: - Bytes

    private func peek() -> UInt8? { position < bytes.count ? bytes[position] : nil }

    private func hasPrefix(_ text: StaticString) -> Bool {
        let count = text.utf8CodeUnitCount
        guard bytes.count - position >= count else { return false }
        return text.withUTF8Buffer { prefix in bytes[position..<(position + count)].elementsEqual(prefix) }
    }

    private mutating func skip(past terminator: StaticString) throws(DomainXMLError) {
        let start = position
        while position < bytes.count {
            if hasPrefix(terminator) {
                position += terminator.utf8CodeUnitCount
                return
            }
            position += 1
        }
        throw DomainXMLError("unterminated markup", at: start)
    }

    @discardableResult
    private mutating func skipWhitespace() -> Bool {
        let start = position
        while let byte = peek(), ASCII.isWhitespace(byte) { position += 1 }
        return position > start
    }

    private mutating func expect(_ byte: UInt8, _ what: String) throws(DomainXMLError) {
        guard peek() == byte else { throw DomainXMLError("expected \(what)", at: position) }
        position += 1
    }
}

private enum ASCII {
    static let lessThan = UInt8(ascii: "<")
    static let greaterThan = UInt8(ascii: ">")
    static let slash = UInt8(ascii: "/")
    static let equals = UInt8(ascii: "=")
    static let apostrophe = UInt8(ascii: "'")
    static let quote = UInt8(ascii: "\"")
    static let ampersand = UInt8(ascii: "&")
    static let semicolon = UInt8(ascii: ";")
    static let openBracket = UInt8(ascii: "[")
    static let hyphen = UInt8(ascii: "-")
    static let dot = UInt8(ascii: ".")

    static func isWhitespace(_ byte: UInt8) -> Bool { byte == 0x20 || byte == 0x09 || byte == 0x0a || byte == 0x0d }
    static func isDigit(_ byte: UInt8) -> Bool { byte >= 0x30 && byte <= 0x39 }

    /// Letters, digits, `_ - . :` and any non-ASCII byte (names may be UTF-8).
    static func isNameByte(_ byte: UInt8) -> Bool {
        (byte >= 0x61 && byte <= 0x7a) || (byte >= 0x41 && byte <= 0x5a) || isDigit(byte)
            || byte == UInt8(ascii: "_") || byte == hyphen || byte == dot || byte == UInt8(ascii: ":") || byte >= 0x80
    }
}
