import PassthroughAgent
import PassthroughCore
import PassthroughTestSupport
import Testing

/// What the BAR check and the link check keep across a restart, in `/run/passthrough-agent/facts/<card>`.
@Suite("Card facts on disk")
struct CardFactsStoreTests {
    static let card = CardName("u200")!

    @Test("written and read back whole; nothing to keep is no file")
    func roundTrip() throws {
        let sysfs = FakeSysfs()
        let store = CardFactsStore(directory: sysfs.root.appending("run/facts"))
        let facts = CardFacts(barReassignment: BARReassignment(layout: "0000:01:00.0/2=268435456", outcome: .refused,
                                                               detail: "a reason\nover two lines", notified: true),
                              healthyLink: PCILinkState(speed: 2.5, width: 16))
        try store.save(facts, of: Self.card)
        var expected = facts
        expected.barReassignment?.detail = "a reason over two lines"
        #expect(store.load(Self.card) == expected)
        try store.save(CardFacts(), of: Self.card)
        #expect(!sysfs.exists("run/facts/u200"))
        #expect(store.load(Self.card) == CardFacts())
    }

    @Test("a file this code did not write is read as nothing learnt (then rewritten), never half-read",
          arguments: ["garbage\n", "bar-layout=x\nbar-outcome=exploded\nbar-notified=yes\n", "link=fast 16\n", "link=8 16\nlink=8 16\n"])
    func foreign(_ contents: String) {
        let sysfs = FakeSysfs()
        sysfs.writeFileCreatingDirectories("run/facts/u200", contents)
        #expect(CardFactsStore(directory: sysfs.root.appending("run/facts")).load(Self.card) == CardFacts())
    }
}
