import PassthroughConfig
import PassthroughCore

/// `config`: the configuration loader; each input is a whole `config.toml`, bytes and all.
///
/// Besides crashes and hangs (`make fuzz` passes `-timeout=`), it checks what a user relies on: a rejected
/// file names at least one mistake, and every mistake points at a line of the file.
@_cdecl("passthrough_fuzz_config")
public func fuzzConfig(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = UnsafeBufferPointer(start: data, count: size)
    do {
        let config = try ConfigLoader.parse(contents: bytes, path: "fuzz.toml")
        let names = config.cards.map(\.name)
        if Set(names).count != names.count { fatalError("two cards named alike were accepted: \(names)") }
    } catch {
        if error.diagnostics.isEmpty { fatalError("a configuration was rejected without a reason") }
        let lines = bytes.reduce(1) { $1 == 0x0A ? $0 + 1 : $0 }
        for diagnostic in error.diagnostics {
            let location = diagnostic.location
            if location.line < 1 || location.line > lines || location.column < 1 {
                fatalError("\(diagnostic) points outside the file's \(lines) line(s)")
            }
        }
    }
    return 0
}
