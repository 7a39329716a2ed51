/// Where each key and value of a TOML document starts.
///
/// TOMLKit reports positions only for syntax errors; a wrong value needs its own `line:col`
/// too. The scanner follows table headers, keys, strings, arrays and inline tables, nothing more:
/// it is exact on valid TOML and only has to end on anything else.
///
/// It also runs before TOMLKit, to find what TOMLKit's parser (toml++ 3.4.0) would abort the whole
/// process on instead of reporting (``parserTrap``). toml++ stops at its first error, so it only gets
/// there after a valid prefix, where this scanner agrees with it on what is a header or an array.
///
/// Paths look like `libvirt.uri`, `card[1].ids[0]`; a table header is recorded under its path
/// (`card[1]`).
///
/// Whatever the text, the scan ends: each loop either consumes a scalar or stops, and a scalar no rule
/// expects is skipped (positions after it may then be off, but only for text TOMLKit refused anyway).
struct TOMLSourceMap {
    /// Lines and columns from 1; columns count Unicode scalars.
    struct Position: Hashable {
        var line: Int
        var column: Int

        static let start = Position(line: 1, column: 1)

        mutating func step(over scalar: Unicode.Scalar) {
            if scalar == "\n" {
                line += 1
                column = 1
            } else {
                column += 1
            }
        }
    }

    private(set) var keys: [String: Position] = [:]
    private(set) var values: [String: Position] = [:]
    /// The first place where toml++ 3.4.0 would call one of its parsing functions against that function's
    /// assertion, and what TOML expects there. Without NDEBUG, as SwiftPM builds it even in release, the
    /// assertion aborts the process: `[# comment` (a table header without a key, marzer/tomlplusplus#301),
    /// `x = [1, }` (an array element that is a value terminator). Found by `make fuzz`.
    private(set) var parserTrap: (position: Position, expected: String)?

    init(_ text: String) {
        var scanner = Scanner(Array(text.unicodeScalars))
        scanner.scanDocument(into: &self)
    }

    fileprivate mutating func recordKey(_ path: String, at position: Position) {
        if keys[path] == nil { keys[path] = position }
    }

    fileprivate mutating func recordValue(_ path: String, at position: Position) {
        if values[path] == nil { values[path] = position }
    }

    fileprivate mutating func recordParserTrap(at position: Position, expected: String) {
        if parserTrap == nil { parserTrap = (position, expected) }
    }
}

private struct Scanner {
    private let scalars: [Unicode.Scalar]
    private var index = 0
    private var position = TOMLSourceMap.Position.start
    private var arrayTableCounts: [String: Int] = [:]
    /// Arrays and inline tables the scan is inside of; each is a frame of recursion.
    private var depth = 0
    /// Deeper than toml++ goes (it refuses more than 256 nested values with an error of its own): the scan
    /// stops there rather than overflow the stack on `x = [[[[…`, which now reaches it before TOMLKit.
    private static let maximumDepth = 300

    init(_ scalars: [Unicode.Scalar]) {
        self.scalars = scalars
    }

    private var current: Unicode.Scalar? { index < scalars.count ? scalars[index] : nil }

    private func peek(_ offset: Int) -> Unicode.Scalar? {
        index + offset < scalars.count ? scalars[index + offset] : nil
    }

    private mutating func advance() {
        guard let scalar = current else { return }
        index += 1
        position.step(over: scalar)
    }

    private mutating func advance(by count: Int) {
        for _ in 0..<count { advance() }
    }

    private mutating func skipBlanks() {
        while let scalar = current, scalar == " " || scalar == "\t" { advance() }
    }

    private mutating func skipComment() {
        if current == "#" {
            while let scalar = current, scalar != "\n" { advance() }
        }
    }

    /// Blanks, comments and newlines: what may stand between array elements.
    private mutating func skipTrivia() {
        while let scalar = current {
            if scalar == " " || scalar == "\t" || scalar == "\n" || scalar == "\r" {
                advance()
            } else if scalar == "#" {
                skipComment()
            } else {
                return
            }
        }
    }

    mutating func scanDocument(into map: inout TOMLSourceMap) {
        var table = ""
        while true {
            skipTrivia()
            guard let scalar = current else { return }
            let start = index
            if scalar == "[" {
                table = scanHeader(into: &map)
            } else {
                scanKeyValue(prefix: table, into: &map)
            }
            skipBlanks()
            skipComment()
            skipIfStuck(since: start)
        }
    }

    /// Consumes one scalar when an iteration consumed none: the guarantee that every loop ends.
    private mutating func skipIfStuck(since start: Int) {
        if index == start { advance() }
    }

    private mutating func scanHeader(into map: inout TOMLSourceMap) -> String {
        let start = position
        let isArrayTable = peek(1) == "["
        advance(by: isArrayTable ? 2 : 1)
        skipBlanks()
        if let scalar = current, !Self.isBareKeyScalar(scalar), scalar != "\"", scalar != "'", scalar != "]" {
            map.recordParserTrap(at: position, expected: "a key (bare or quoted) in the table header")
        }
        let name = scanDottedKey().joined(separator: ".")
        skipBlanks()
        advance(by: isArrayTable ? 2 : 1)
        let path: String
        if isArrayTable {
            let index = arrayTableCounts[name, default: 0]
            arrayTableCounts[name] = index + 1
            path = "\(name)[\(index)]"
        } else {
            path = name
        }
        map.recordKey(path, at: start)
        return path
    }

    private mutating func scanKeyValue(prefix: String, into map: inout TOMLSourceMap) {
        let keyStart = position
        let key = scanDottedKey().joined(separator: ".")
        let path = prefix.isEmpty ? key : "\(prefix).\(key)"
        map.recordKey(path, at: keyStart)
        skipBlanks()
        if current == "=" { advance() }
        skipBlanks()
        scanValue(path: path, into: &map)
    }

    private mutating func scanDottedKey() -> [String] {
        var parts: [String] = []
        while true {
            skipBlanks()
            parts.append(scanSimpleKey())
            skipBlanks()
            guard current == "." else { return parts }
            advance()
        }
    }

    private mutating func scanSimpleKey() -> String {
        var key = String.UnicodeScalarView()
        if let quote = current, quote == "\"" || quote == "'" {
            advance()
            while let scalar = current, scalar != quote, scalar != "\n" {
                if quote == "\"", scalar == "\\" {
                    advance()
                }
                if let escaped = current { key.append(escaped) }
                advance()
            }
            advance()
        } else {
            while let scalar = current, Self.isBareKeyScalar(scalar) {
                key.append(scalar)
                advance()
            }
        }
        return String(key)
    }

    private static func isBareKeyScalar(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar {
        case "a"..."z", "A"..."Z", "0"..."9", "_", "-": true
        default: false
        }
    }

    private mutating func scanValue(path: String, into map: inout TOMLSourceMap) {
        map.recordValue(path, at: position)
        switch current {
        case "\"", "'":
            scanString()
        case "[":
            guard enterContainer() else { return }
            defer { depth -= 1 }
            advance()
            var element = 0
            while true {
                skipTrivia()
                guard let scalar = current, scalar != "]" else { break }
                // toml++ skips blanks, line breaks and comments here, takes ',' and ']', and parses anything
                // else as a value, asserting that it does not end one: '}' and the line separators it counts
                // as whitespace but does not skip (U+0085, U+2028, U+2029).
                if scalar == "}" || scalar == "\u{85}" || scalar == "\u{2028}" || scalar == "\u{2029}" {
                    map.recordParserTrap(at: position, expected: "a value, ',' or ']' in the array")
                }
                let start = index
                scanValue(path: "\(path)[\(element)]", into: &map)
                element += 1
                skipTrivia()
                if current == "," { advance() }
                skipIfStuck(since: start)
            }
            advance()
        case "{":
            guard enterContainer() else { return }
            defer { depth -= 1 }
            advance()
            while true {
                skipTrivia()
                guard let scalar = current, scalar != "}" else { break }
                let start = index
                scanKeyValue(prefix: path, into: &map)
                skipTrivia()
                if current == "," { advance() }
                skipIfStuck(since: start)
            }
            advance()
        default:
            while let scalar = current, !Self.endsScalarToken(scalar) { advance() }
        }
    }

    /// Enters an array or inline table; at the depth limit the scan ends instead.
    private mutating func enterContainer() -> Bool {
        guard depth < Self.maximumDepth else {
            index = scalars.count
            return false
        }
        depth += 1
        return true
    }

    private static func endsScalarToken(_ scalar: Unicode.Scalar) -> Bool {
        scalar == "," || scalar == "]" || scalar == "}" || scalar == "#" || scalar == "\n" || scalar == "\r"
            || scalar == " " || scalar == "\t"
    }

    private mutating func scanString() {
        guard let quote = current else { return }
        let isMultiline = peek(1) == quote && peek(2) == quote
        advance(by: isMultiline ? 3 : 1)
        while let scalar = current {
            if quote == "\"", scalar == "\\" {
                advance(by: 2)
                continue
            }
            if scalar == quote {
                if !isMultiline {
                    advance()
                    return
                }
                if peek(1) == quote, peek(2) == quote {
                    advance(by: 3)
                    // Up to two more quotes may belong to the content ("""a"""").
                    while current == quote { advance() }
                    return
                }
            }
            advance()
        }
    }
}
