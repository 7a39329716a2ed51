import Foundation
@testable import PassthroughConfig
import PassthroughCore
import PassthroughTestSupport
import Testing

private let card = "[[card]]\nname = \"u200\"\naddress = \"0000:01:00\"\nguest = \"vm\"\n"

/// Writes `bytes` to a fresh file and loads it as the daemon does.
private func load(_ bytes: [UInt8]) throws -> (path: String, result: Result<AgentConfig, ConfigError>) {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("config-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    let path = directory.appendingPathComponent("config.toml").path
    try Data(bytes).write(to: URL(fileURLWithPath: path))
    defer { try? FileManager.default.removeItem(at: directory) }
    return (path, Result { () throws(ConfigError) in try ConfigLoader.load(path: path) })
}

@Suite("Config: bytes that are not a configuration")
struct ConfigBadInputTests {
    @Test("a zero-filled file (a crash mid-write) is an invalid configuration at 1:1, not 'no cards'")
    func zeroFilled() throws {
        let (path, result) = try load([UInt8](repeating: 0, count: 4096))
        #expect(throws: ConfigError.self) { try result.get() }
        guard case .failure(let error) = result else { return }
        #expect(error.kind == .invalid)
        #expect(error.description.hasPrefix("\(path):1:1: NUL byte in the configuration"), "\(error)")
    }

    @Test("a NUL after a valid document is found where it is, and the scan ends")
    func nulAfterDocument() async {
        // Before: TOMLKit stopped at the NUL, and the source map then looped for ever on the `]` after it.
        let found = await onOwnThread(within: .seconds(10)) { diagnostics(card + "\0]") }
        #expect(found == ["config.toml:5:1: NUL byte in the configuration (a file zero-filled by a crash?); TOML text has none"])
    }

    @Test("a NUL inside a string is refused too")
    func nulInString() {
        #expect(diagnostics("[[card]]\nname = \"u2\0\"\n").first?.hasPrefix("config.toml:2:11: NUL byte") == true)
    }

    @Test("bytes that are not UTF-8 are an invalid configuration naming the first bad byte's place")
    func notUTF8() throws {
        // Latin-1 "é" in the guest's name on line 4, column 13.
        let bytes = Array("[[card]]\nname = \"u200\"\naddress = \"0000:01:00\"\nguest = \"caf".utf8) + [0xE9] + Array("\"\n".utf8)
        let (path, result) = try load(bytes)
        guard case .failure(let error) = result else {
            Issue.record("a Latin-1 file was accepted")
            return
        }
        #expect(error.kind == .invalid, "'unreadable' makes monitor fall back to the default URI and check say 'missing'")
        #expect(error.description == "\(path):4:13: not UTF-8 text (byte 0xe9); a configuration is a UTF-8 TOML file")
    }

    @Test("columns count characters, not bytes, before the bad byte")
    func notUTF8AfterMultibyte() {
        let bytes = Array("# café ☕\n# ok\nx = \"€".utf8) + [0xC3, 0x28]
        #expect(throws: ConfigError.self) { try ConfigLoader.parse(contents: bytes, path: "c.toml") }
        do {
            _ = try ConfigLoader.parse(contents: bytes, path: "c.toml")
        } catch {
            #expect(error.description.hasPrefix("c.toml:3:7: not UTF-8 text (byte 0xc3)"), "\(error)")
        }
    }

    // Found by `make fuzz`: toml++ 3.4.0 asserts on these (marzer/tomlplusplus#301) and the assertion is
    // compiled in, so `check` died of SIGABRT and the daemon would have died on SIGHUP, then at every restart.
    @Test("a table header without a key is invalid TOML at its place, not an abort", arguments: [
        ("[# passthr[", "1:2"), ("[[[1]]]", "1:3"), ("[[=", "1:3"), ("[ \t#c]", "1:4"), ("[\nkey]\n", "1:2"),
        ("[[card]]\nname = \"u200\"\n\n[[ {", "4:4"),
    ])
    func keylessHeader(text: String, place: String) {
        #expect(diagnostics(text) == ["config.toml:\(place): invalid TOML: expected a key (bare or quoted) in the table header"])
    }

    @Test("an array element that ends a value before it starts is invalid TOML at its place, not an abort", arguments: [
        ("ids = [\n  \"10ee:903f\", # a comment\n  '10ee:9038',}}}\n", "3:15"), ("x = [}", "1:6"), ("x = [1, [ }]]", "1:11"),
        ("x = [\u{2028}]", "1:6"), ("x = [\u{85}1]", "1:6"), ("t = { a = [ \u{2029} ] }", "1:13"),
    ])
    func arrayElementTerminator(text: String, place: String) {
        #expect(diagnostics(text) == ["config.toml:\(place): invalid TOML: expected a value, ',' or ']' in the array"])
    }

    @Test("arrays nested past toml++'s limit are its error, not a stack overflow in the source map")
    func deepNesting() {
        let found = diagnostics("x = " + String(repeating: "[", count: 100_000))
        #expect(found.count == 1 && found[0].hasPrefix("config.toml:1:") && found[0].contains("invalid TOML"), "got \(found)")
        let inline = diagnostics("x = " + String(repeating: "{ a = [", count: 20_000))
        #expect(inline.count == 1 && inline[0].contains("invalid TOML"), "got \(inline)")
    }

    @Test("brackets that are not table headers are left to TOML")
    func bracketsInValues() throws {
        // A nested array on a line of its own, with a comment after its '[': valid TOML, not a header.
        #expect(diagnostics("x = [\n[ # inner\n1]]\n").first?.contains("unknown key \"x\"") == true)
        #expect(diagnostics("[ ]\n").first?.hasPrefix("config.toml:1:3: invalid TOML") == true)
        let quoted = "[ \"libvirt\" ]\nuri = \"test:///default\"\n"
        #expect(try ConfigLoader.parse(quoted, path: "config.toml").libvirtURI == "test:///default")
    }

    @Test("the source map ends on any text, even text TOMLKit never accepted", arguments: [
        "x = [}", "x = {]}", "]", "}", ",", "a.=", "[a", "[[", "x = [1, }", "x = { a = ] }", "\"unterminated", "x = '''", "=",
    ])
    func sourceMapEnds(text: String) async {
        let map = await onOwnThread(within: .seconds(10)) { TOMLSourceMap(text) }
        #expect(map != nil, "the scan of \(text.debugDescription) did not end")
    }
}

@Suite("Config: names, watches and URIs the daemon cannot honour")
struct ConfigRefusalTests {
    @Test("guest names with C1 or bidirectional-text controls are refused", arguments: [
        "vm\u{85}", "vm\u{9B}31m", "\u{202E}mv", "a\u{2066}b\u{2069}", "a\u{200F}", "a\u{200E}", "a\u{61C}", "a\u{202A}", "a\u{2068}",
    ])
    func guestControls(name: String) {
        let found = diagnostics("[[card]]\nname = \"u200\"\naddress = \"0000:01:00\"\nguest = \"\(name)\"\n")
        #expect(found.first?.hasPrefix("config.toml:4:9: invalid guest name") == true, "got \(found)")
        #expect(!(found.first ?? "").unicodeScalars.contains { $0.isControlOrBidiControl && $0 != "\n" },
                "the message itself must not carry the control: \(found)")
    }

    @Test("ordinary non-ASCII guest names are fine")
    func guestUnicode() throws {
        let text = "[[card]]\nname = \"u200\"\naddress = \"0000:01:00\"\nguest = \"café-ü\u{05D0}\"\n"
        #expect(try ConfigLoader.parse(text, path: "config.toml").cards.first?.guest.rawValue == "café-ü\u{05D0}")
    }

    @Test("link-watch on a card with only ids is refused at the key")
    func linkWatchWithoutAddress() {
        let found = diagnostics("[[card]]\nname = \"u200\"\nids = [\"10ee:903f\"]\nguest = \"vm\"\nlink-watch = \"1s\"\n")
        #expect(found.count == 1, "got \(found)")
        #expect(found.first?.hasPrefix("config.toml:5:1: 'link-watch' needs the card's 'address'") == true, "got \(found)")
    }

    @Test("link-watch = \"off\" needs no address; with an address it is kept")
    func linkWatchAccepted() throws {
        let idsOnly = "[[card]]\nname = \"u200\"\nids = [\"10ee:903f\"]\nguest = \"vm\"\nlink-watch = \"off\"\n"
        #expect(try ConfigLoader.parse(idsOnly, path: "config.toml").cards.first?.linkWatch == .off)
        let withAddress = card + "link-watch = \"1s\"\n"
        #expect(try ConfigLoader.parse(withAddress, path: "config.toml").cards.first?.linkWatch == .every(.seconds(1)))
    }

    @Test("a remote libvirt URI is refused, with the reason", arguments: [
        ("qemu+ssh://root@kvm1/system", "(transport \"+ssh\")"),
        ("qemu+tcp://kvm1/system", "(transport \"+tcp\")"),
        ("qemu+tls://kvm1.example.org/system", "(transport \"+tls\")"),
        ("qemu+libssh2://u@kvm1/system?known_hosts=/root/.ssh/known_hosts", "(transport \"+libssh2\")"),
        ("qemu+ext:///system?command=/opt/reach-libvirt", "(transport \"+ext\")"),
        ("qemu://kvm1/system", "(host \"kvm1\")"),
        ("qemu://root@kvm1/system", "(host \"root@kvm1\")"),
        ("qemu://localhost:16514/system", "(host \"localhost:16514\")"),
    ])
    func remoteURI(uri: String, reason: String) {
        let found = diagnostics("[libvirt]\nuri = \"\(uri)\"\n")
        #expect(found.first?.hasPrefix("config.toml:2:7: remote libvirt URI \"\(uri)\" \(reason)") == true, "got \(found)")
        #expect(found.first?.contains("RestrictAddressFamilies=AF_UNIX AF_NETLINK forbids network sockets") == true)
    }

    @Test("local URIs are kept", arguments: [
        "qemu:///system", "qemu:///session", "test:///default", "qemu+unix:///system?socket=/run/libvirt/virtqemud-sock",
    ])
    func localURI(uri: String) throws {
        #expect(try ConfigLoader.parse("[libvirt]\nuri = \"\(uri)\"\n", path: "config.toml").libvirtURI == uri)
    }

    @Test("a URI without a scheme (a client-side alias that may name any host) is refused", arguments: [
        "kvm1", "", "qemu :///system", "://system",
    ])
    func malformedURI(uri: String) {
        let found = diagnostics("[libvirt]\nuri = \"\(uri)\"\n")
        #expect(found.first?.hasPrefix("config.toml:2:7: 'uri' must be a libvirt connection URI") == true, "got \(found)")
    }
}
