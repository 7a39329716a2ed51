// Config errors: each mistake with the place it was found (`path:line:col`), gathered into one error.

/// A place in a file, 1-based, as compilers print it.
public struct SourceLocation: Hashable, Sendable, CustomStringConvertible {
    public var path: String
    public var line: Int
    public var column: Int

    public init(path: String, line: Int, column: Int) {
        self.path = path
        self.line = line
        self.column = column
    }

    public var description: String { "\(path):\(line):\(column)" }
}

/// One thing wrong with the configuration, printed `path:line:col: message`.
public struct ConfigDiagnostic: Hashable, Sendable, CustomStringConvertible {
    public var location: SourceLocation
    public var message: String

    public init(location: SourceLocation, message: String) {
        self.location = location
        self.message = message
    }

    public var description: String { "\(location): \(message)" }
}

/// A configuration that cannot be used; every mistake found is listed, in file order.
public struct ConfigError: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Kind: Hashable, Sendable {
        /// The file could not be read at all (missing, permissions).
        case unreadable
        /// The file was read and has mistakes.
        case invalid
    }

    public var kind: Kind
    public var diagnostics: [ConfigDiagnostic]

    public init(kind: Kind = .invalid, diagnostics: [ConfigDiagnostic]) {
        self.kind = kind
        self.diagnostics = diagnostics.sorted {
            ($0.location.line, $0.location.column) < ($1.location.line, $1.location.column)
        }
    }

    public var description: String { diagnostics.map(\.description).joined(separator: "\n") }
}
