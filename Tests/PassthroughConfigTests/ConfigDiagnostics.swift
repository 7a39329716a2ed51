import PassthroughConfig

/// The configuration's diagnostics for `text` as `path:line:col: message` lines; none when it is valid.
func diagnostics(_ text: String) -> [String] {
    do {
        _ = try ConfigLoader.parse(text, path: "config.toml")
        return []
    } catch {
        return error.diagnostics.map(\.description)
    }
}
