import PassthroughCore

/// The configuration file's bytes as TOML text, or the `line:col` of the first byte that cannot be.
///
/// TOMLKit hands the text to a C++ parser as a C string, so a NUL byte silently ends the document: a
/// file zero-filled by a crash would read as "no cards" and the host would be given back. Bytes that
/// are not UTF-8 would be replaced or refused far from their place. Both are mistakes in the file,
/// reported where they are, before TOMLKit sees anything.
enum ConfigText {
    /// Decodes UTF-8 strictly and refuses a NUL anywhere (TOML allows none); the first malformed
    /// sequence or NUL is the mistake.
    static func decode(_ bytes: some Collection<UInt8>, path: String) throws(ConfigError) -> String {
        var text = String.UnicodeScalarView()
        var iterator = bytes.makeIterator()
        var decoder = Unicode.UTF8()
        while true {
            switch decoder.decode(&iterator) {
            case .scalarValue("\0"):
                throw mistake(after: text, in: path, "NUL byte in the configuration (a file zero-filled by a crash?); TOML text has none")
            case .scalarValue(let scalar):
                text.append(scalar)
            case .emptyInput:
                return String(text)
            case .error:
                let offset = String(text).utf8.count
                throw mistake(after: text, in: path, "not UTF-8 text (byte \(byteDescription(bytes, at: offset))); a configuration is a UTF-8 TOML file")
            }
        }
    }

    /// A mistake at the place right after `text`, counted as ``TOMLSourceMap`` counts places.
    private static func mistake(after text: String.UnicodeScalarView, in path: String, _ message: String) -> ConfigError {
        var place = TOMLSourceMap.Position.start
        for scalar in text { place.step(over: scalar) }
        return ConfigError(diagnostics: [
            ConfigDiagnostic(location: SourceLocation(path: path, line: place.line, column: place.column), message: message),
        ])
    }

    private static func byteDescription(_ bytes: some Collection<UInt8>, at offset: Int) -> String {
        guard let byte = bytes.dropFirst(offset).first else { return "sequence cut short at the end of the file" }
        return Hex.prefixed(byte, width: 2)
    }
}
