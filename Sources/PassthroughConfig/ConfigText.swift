import PassthroughCore

/// The configuration file's bytes as TOML text, or the `line:col` of the first byte that cannot be.
///
/// TOMLKit hands the text to a C++ parser as a C string, so a NUL byte silently ends the document: a
/// file zero-filled by a crash would read as "no cards" and the host would be given back. Bytes that
/// are not UTF-8 would be replaced or refused far from their place. Both are mistakes in the file,
/// reported where they are, before TOMLKit sees anything.
enum ConfigText {
    /// Decodes UTF-8 strictly; the first malformed sequence is the mistake.
    static func decode(_ bytes: some Collection<UInt8>, path: String) throws(ConfigError) -> String {
        var text = String.UnicodeScalarView()
        var cursor = Cursor()
        var iterator = bytes.makeIterator()
        var decoder = Unicode.UTF8()
        while true {
            switch decoder.decode(&iterator) {
            case .scalarValue(let scalar):
                text.append(scalar)
                cursor.step(over: scalar)
            case .emptyInput:
                return String(text)
            case .error:
                throw ConfigError(diagnostics: [
                    ConfigDiagnostic(
                        location: cursor.location(in: path),
                        message: "not UTF-8 text (byte \(byteDescription(bytes, at: cursor.byteOffset))); a configuration is a UTF-8 TOML file"
                    ),
                ])
            }
        }
    }

    /// Refuses a NUL anywhere: TOML allows none, and TOMLKit would stop reading at the first.
    static func rejectNUL(in text: String, path: String) throws(ConfigError) {
        var cursor = Cursor()
        for scalar in text.unicodeScalars {
            if scalar == "\0" {
                throw ConfigError(diagnostics: [
                    ConfigDiagnostic(
                        location: cursor.location(in: path),
                        message: "NUL byte in the configuration (a file zero-filled by a crash?); TOML text has none"
                    ),
                ])
            }
            cursor.step(over: scalar)
        }
    }

    private static func byteDescription(_ bytes: some Collection<UInt8>, at offset: Int) -> String {
        guard let byte = bytes.dropFirst(offset).first else { return "sequence cut short at the end of the file" }
        return "0x" + (byte < 0x10 ? "0" : "") + String(byte, radix: 16)
    }

    /// Lines and columns as ``TOMLSourceMap`` counts them: columns in Unicode scalars, from 1.
    private struct Cursor {
        var line = 1
        var column = 1
        var byteOffset = 0

        mutating func step(over scalar: Unicode.Scalar) {
            byteOffset += UTF8.width(scalar)
            if scalar == "\n" {
                line += 1
                column = 1
            } else {
                column += 1
            }
        }

        func location(in path: String) -> SourceLocation {
            SourceLocation(path: path, line: line, column: column)
        }
    }
}
