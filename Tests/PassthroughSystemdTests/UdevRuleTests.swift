import PassthroughTestSupport
import Testing

/// Checks `rules/90-passthrough-agent.rules` by parsing it: `udevadm verify` needs systemd ≥ 254.
struct UdevRuleTests {
    private struct Token: Equatable {
        var key: String
        var attribute: String?
        var operation: String
        var value: String
    }

    private static let matchOperations: Set = ["==", "!="]
    private static let assignOperations: Set = ["=", "+=", "-=", ":="]
    private static let matchKeys: Set = ["ACTION", "SUBSYSTEM", "KERNEL", "DRIVER", "ATTR", "ENV"]
    private static let assignKeys: Set = ["TAG", "ENV", "GOTO", "LABEL"]

    private func ruleLines() throws -> [[Token]] {
        try RepositoryFile.contents("rules/90-passthrough-agent.rules")
            .split(separator: "\n")
            .filter { !$0.hasPrefix("#") && !$0.allSatisfy(\.isWhitespace) }
            .map { line in
                try line.split(separator: ", ").map { part in
                    let match = try #require(
                        part.wholeMatch(of: #/([A-Z_]+)(?:\{([A-Za-z0-9_]+)\})?(==|!=|\+=|-=|:=|=)"([^"]*)"/#),
                        "not udev syntax: \(part)"
                    )
                    return Token(key: String(match.1), attribute: match.2.map(String.init), operation: String(match.3), value: String(match.4))
                }
            }
    }

    @Test func everyTokenIsWellFormed() throws {
        let lines = try ruleLines()
        #expect(!lines.isEmpty)
        for token in lines.joined() {
            if Self.matchOperations.contains(token.operation) {
                #expect(Self.matchKeys.contains(token.key), "\(token)")
            } else {
                #expect(Self.assignKeys.contains(token.key), "\(token)")
            }
        }
        let labels = Set(lines.joined().filter { $0.key == "LABEL" }.map(\.value))
        for jump in lines.joined().filter({ $0.key == "GOTO" }) {
            #expect(labels.contains(jump.value), "GOTO without LABEL: \(jump.value)")
        }
    }

    @Test func startsTheServiceForXilinxPCIDevices() throws {
        let lines = try ruleLines()
        let wanting = try #require(lines.first { $0.contains { $0.key == "ENV" && $0.attribute == "SYSTEMD_WANTS" } })
        #expect(wanting.contains(Token(key: "ATTR", attribute: "vendor", operation: "==", value: "0x10ee")))
        #expect(wanting.contains(Token(key: "TAG", attribute: nil, operation: "+=", value: "systemd")))
        #expect(wanting.contains(Token(key: "ENV", attribute: "SYSTEMD_WANTS", operation: "+=", value: "passthrough-agent.service")))

        // Earlier lines must skip removals and everything that is not PCI.
        let guards = lines.prefix { $0 != wanting }.joined()
        #expect(guards.contains(Token(key: "ACTION", attribute: nil, operation: "==", value: "remove")))
        #expect(guards.contains(Token(key: "SUBSYSTEM", attribute: nil, operation: "!=", value: "pci")))
    }
}
