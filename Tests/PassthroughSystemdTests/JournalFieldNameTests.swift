import PassthroughSystemd
import Testing

struct JournalFieldNameTests {
    @Test(arguments: [
        ("PCI_SLOT", "PCI_SLOT"),
        ("pci-slot", "PCI_SLOT"),
        ("message-id", "MESSAGE_ID"),
        ("card.name", "CARD_NAME"),
        ("Grüße", "GR__E"),
        ("_PID", "META__PID"),
        ("9lives", "META_9LIVES"),
        ("", "META_"),
    ])
    func sanitises(key: String, expected: String) {
        #expect(JournalFieldName.sanitize(key) == expected)
        #expect(JournalFieldName.isValid(JournalFieldName.sanitize(key)))
    }

    @Test func truncatesToSixtyFourCharacters() {
        let name = JournalFieldName.sanitize(String(repeating: "a", count: 100))
        #expect(name == String(repeating: "A", count: 64))
        #expect(JournalFieldName.isValid(name))
        #expect(JournalFieldName.sanitize("_" + String(repeating: "b", count: 100)).count == 64)
    }

    @Test func validityFollowsJournaldRules() {
        #expect(JournalFieldName.isValid("DURATION_USEC"))
        #expect(!JournalFieldName.isValid("_SYSTEMD_UNIT"))
        #expect(!JournalFieldName.isValid("1X"))
        #expect(!JournalFieldName.isValid("lower"))
        #expect(!JournalFieldName.isValid(""))
        #expect(!JournalFieldName.isValid(String(repeating: "A", count: 65)))
    }
}
