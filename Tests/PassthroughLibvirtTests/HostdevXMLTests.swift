import PassthroughCore
@testable import PassthroughLibvirt
import Testing

@Suite struct HostdevXMLTests {
    @Test func buildsTheExactElementLibvirtExpects() throws {
        let address = try #require(PCIAddress("0000:01:00.0"))
        #expect(HostdevXML.pci(address) == """
            <hostdev mode='subsystem' type='pci' managed='no'><source><address domain='0x0000' bus='0x01' \
            slot='0x00' function='0x0'/></source></hostdev>
            """)
    }

    @Test func writesEveryFieldInLowerCaseHexWithLibvirtsWidths() throws {
        let address = try #require(PCIAddress("ABCD:Fe:1f.7"))
        #expect(HostdevXML.pci(address, managed: true) == """
            <hostdev mode='subsystem' type='pci' managed='yes'><source><address domain='0xabcd' bus='0xfe' \
            slot='0x1f' function='0x7'/></source></hostdev>
            """)
    }

    @Test func builtXMLParsesBackToTheSameAddress() throws {
        let address = try #require(PCIAddress("0000:65:00.1"))
        let domain = "<domain><devices>\(HostdevXML.pci(address))</devices></domain>"
        #expect(try LiveHostdevParser.hostdevs(inDomainXML: domain) == [Hostdev(address: address, alias: nil, managed: false)])
    }

    @Test func hostileAddressesNeverReachTheXMLBuilder() {
        // The builder only takes a checked `PCIAddress`; these are what a config or event could carry.
        for text in ["0000:01:00.0'/><evil/>", "0000:01:00.0 ", "../../0000:01:00.0", "0000:01:20.0", "0000:01:00.8", ""] {
            #expect(PCIAddress(text) == nil, "\(text)")
        }
    }

    @Test func hostileGuestNamesAreRefusedByTheCoreType() {
        for name in ["", "a/b", "line\nbreak", "nul\u{0}byte", "del\u{7f}", String(repeating: "x", count: 256)] {
            #expect(GuestName(name) == nil, "\(name.debugDescription)")
        }
        // Quotes and angle brackets are legal domain names; they only ever travel as C strings, never as XML.
        #expect(GuestName("it's <fine> & \"ok\"") != nil)
    }

    @Test func attributeEscapingCoversEverythingSpecial() {
        #expect(XMLEscaping.attribute(#"a&b<c>d'e"f"#) == "a&amp;b&lt;c&gt;d&apos;e&quot;f")
        #expect(XMLEscaping.attribute("tab\tnl\ncr\r") == "tab&#9;nl&#10;cr&#13;")
        #expect(XMLEscaping.attribute("plain-ü") == "plain-ü")
    }

    @Test func escapedAttributeValuesSurviveTheScanner() throws {
        let nasty = "x'/><hostdev mode='subsystem' type='pci'>\"&\t"
        var scanner = XMLScanner("<a v='\(XMLEscaping.attribute(nasty))'/>")
        #expect(try scanner.next() == .start(name: "a", attributes: ["v": nasty], selfClosing: true))
        #expect(try scanner.next() == nil)
    }
}
