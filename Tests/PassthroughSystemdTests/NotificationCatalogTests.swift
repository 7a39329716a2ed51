import Foundation
import PassthroughSystemd
import PassthroughTestSupport
import Testing

struct NotificationCatalogTests {
    private static let catalogPath = "systemd/passthrough-agent.catalog"

    /// Catalog entries by id: the lines from one `-- id` header to the next.
    private func entries() throws -> [(id: String, lines: [String])] {
        var entries: [(id: String, lines: [String])] = []
        for line in try RepositoryFile.contents(Self.catalogPath).split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("-- ") {
                entries.append((String(line.dropFirst(3)), []))
            } else if !entries.isEmpty {
                entries[entries.count - 1].lines.append(String(line))
            }
        }
        return entries
    }

    @Test func idsAreWellFormedAndDistinct() {
        let ids = NotificationKind.allCases.map(\.messageID)
        #expect(ids.count == 19)
        #expect(Set(ids).count == ids.count)
        for id in ids {
            #expect(MessageID(rawValue: id.rawValue) == id)
        }
        #expect(MessageID(rawValue: "60BD35B3DAF642E1971E5FBB8AFBE012") == nil)
        #expect(MessageID(rawValue: "60bd35b3-daf6-42e1-971e-5fbb8afbe012") == nil)
    }

    @Test func catalogDocumentsExactlyTheMessageIDs() throws {
        let catalogIDs = try entries().map(\.id)
        #expect(Set(catalogIDs).count == catalogIDs.count, "an id is documented twice")
        #expect(Set(catalogIDs) == Set(NotificationKind.allCases.map(\.messageID.rawValue)))
    }

    @Test func everyEntryHasHeadersAndBody() throws {
        for entry in try entries() {
            let headers = entry.lines.prefix { !$0.isEmpty }
            let body = entry.lines.drop { !$0.isEmpty }.filter { !$0.isEmpty && !$0.hasPrefix("#") }
            #expect(headers.contains { $0.hasPrefix("Subject: ") }, "\(entry.id)")
            #expect(headers.contains("Defined-By: passthrough-agent"), "\(entry.id)")
            #expect(headers.contains { $0.hasPrefix("Support: ") }, "\(entry.id)")
            #expect(body.count >= 2, "\(entry.id) needs an explanation and advice")
        }
    }

    /// Lets journalctl itself parse the catalog, in a scratch root so the host is untouched.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/journalctl"), "needs journalctl"))
    func journalctlCompilesTheCatalog() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("catalog-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        let catalogDirectory = root.appendingPathComponent("usr/lib/systemd/catalog")
        try FileManager.default.createDirectory(at: catalogDirectory, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(at: root.appendingPathComponent("var/lib/systemd/catalog"), withIntermediateDirectories: true)
        try FileManager.default.copyItem(
            at: RepositoryFile.url(Self.catalogPath),
            to: catalogDirectory.appendingPathComponent("passthrough-agent.catalog")
        )

        let update = try await ToolRun.run("/usr/bin/journalctl", ["--root=\(root.path)", "--update-catalog"])
        #expect(update.status == 0, "\(update.output)")
        let listing = try await ToolRun.run("/usr/bin/journalctl", ["--root=\(root.path)", "--list-catalog"])
        for kind in NotificationKind.allCases {
            #expect(listing.output.contains("\(kind.messageID) passthrough-agent: "), "\(kind)")
        }
    }
}

struct NotificationKindTests {
    @Test func metadataAddsTheMessageID() {
        let metadata = NotificationKind.cardLost.metadata([LogMetadataKey.card: "fpga0", LogMetadataKey.messageID: "stale"])
        #expect(metadata[LogMetadataKey.card] == "fpga0")
        #expect(metadata[LogMetadataKey.messageID] == "34f612af286d42afa749b52c63a45398")
    }
}
