import Foundation
import PassthroughCore
import TOMLKit

/// Reads `config.toml` into an ``AgentConfig`` or explains, with `path:line:col`, every mistake.
public enum ConfigLoader {
    /// Loads and validates the file at `path`.
    public static func load(path: String) throws(ConfigError) -> AgentConfig {
        let contents: Data
        do {
            contents = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            let reason = (error as NSError).userInfo[NSUnderlyingErrorKey].map { "\($0)" } ?? "\(error.localizedDescription)"
            throw ConfigError(kind: .unreadable, diagnostics: [
                ConfigDiagnostic(
                    location: SourceLocation(path: path, line: 1, column: 1),
                    message: "cannot read the configuration file (\(Self.plainReason(for: path, fallback: reason)))"
                ),
            ])
        }
        return try parse(contents: contents, path: path)
    }

    /// Validates the file's bytes: UTF-8 text without NUL first, then TOML, then the configuration.
    public static func parse(contents: some Collection<UInt8>, path: String) throws(ConfigError) -> AgentConfig {
        try validate(ConfigText.decode(contents, path: path), path: path)
    }

    /// Loads `path` again while `running` is in effect (SIGHUP): the new configuration, and the settings that
    /// changed but take effect only after a restart (the libvirt connection and the metrics file stay open).
    public static func reload(path: String, running: AgentConfig) throws(ConfigError) -> (config: AgentConfig, waitingForRestart: [String]) {
        let config = try load(path: path)
        var waiting: [String] = []
        if config.libvirtURI != running.libvirtURI { waiting.append("libvirt.uri") }
        if config.metricsFile != running.metricsFile { waiting.append("agent.metrics-file") }
        return (config, waiting)
    }

    /// Validates configuration text; `path` only names the file in diagnostics.
    public static func parse(_ text: String, path: String) throws(ConfigError) -> AgentConfig {
        try parse(contents: text.utf8, path: path)
    }

    /// `text` is UTF-8 without NUL (``ConfigText``).
    private static func validate(_ text: String, path: String) throws(ConfigError) -> AgentConfig {
        let sourceMap = TOMLSourceMap(text)
        if let trap = sourceMap.parserTrap {
            throw ConfigError(diagnostics: [
                ConfigDiagnostic(
                    location: SourceLocation(path: path, line: trap.position.line, column: trap.position.column),
                    message: "invalid TOML: expected \(trap.expected)"
                ),
            ])
        }
        let table: TOMLTable
        do {
            table = try TOMLTable(string: text)
        } catch let error as TOMLParseError {
            throw ConfigError(diagnostics: [
                ConfigDiagnostic(
                    location: SourceLocation(path: path, line: error.source.begin.line, column: error.source.begin.column),
                    message: "invalid TOML: \(error.description)"
                ),
            ])
        } catch {
            throw ConfigError(diagnostics: [
                ConfigDiagnostic(location: SourceLocation(path: path, line: 1, column: 1), message: "invalid TOML: \(error)"),
            ])
        }
        var decoder = ConfigDecoder(path: path, sourceMap: sourceMap)
        let config = decoder.decode(table)
        guard decoder.diagnostics.isEmpty, let config else {
            throw ConfigError(diagnostics: decoder.diagnostics)
        }
        return config
    }

    private static func plainReason(for path: String, fallback: String) -> String {
        if !FileManager.default.fileExists(atPath: path) { return "no such file" }
        if !FileManager.default.isReadableFile(atPath: path) { return "permission denied" }
        return fallback
    }
}
