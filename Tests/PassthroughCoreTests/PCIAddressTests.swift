import PassthroughCore
import Testing

@Suite("PCI addresses")
struct PCIAddressTests {
    @Test("canonical and upper-case function addresses parse and print lower-case", arguments: [
        ("0000:01:00.0", "0000:01:00.0"),
        ("0000:65:00.1", "0000:65:00.1"),
        ("0000:AF:1F.7", "0000:af:1f.7"),
        ("ffff:ff:1f.7", "ffff:ff:1f.7"),
    ])
    func parsesFunction(text: String, printed: String) {
        #expect(PCIAddress(text)?.description == printed)
    }

    @Test("domains wider than four digits parse (Intel VMD from 10000, SPDK, Hyper-V) and print as the kernel does", arguments: [
        ("10000:e0:00.0", "10000:e0:00.0"),
        ("1FFFF:E1:1f.7", "1ffff:e1:1f.7"),
        ("5d0505:00:00.0", "5d0505:00:00.0"),
        ("ffffffff:ff:1f.7", "ffffffff:ff:1f.7"),
    ])
    func parsesWideDomain(text: String, printed: String) {
        #expect(PCIAddress(text)?.description == printed)
    }

    @Test("a wide domain has one spelling: no leading zero past four digits, at most eight", arguments: [
        "010000:e0:00.0", "00010000:e0:00.0", "100000000:e0:00.0", "1000g:e0:00.0", "10000:e0:00.0/..",
    ])
    func rejectsNonCanonicalDomain(text: String) {
        #expect(PCIAddress(text) == nil)
    }

    @Test("hostile and malformed strings are rejected", arguments: [
        "", "../../x", "0000:01:00.0/../../..", "0000:01:00", "0000:01:00.8", "0000:01:20.0",
        "000:01:00.0", "00000:01:00.0", "0000:1:00.0", "0000:01:0.0", "0000:01:00.00", " 0000:01:00.0",
        "0000:01:00.0\n", "0000:01:00.-1", "+000:01:00.0", "0x00:01:00.0", "0000:01:00.0.0", "0000;01:00.0",
        "ＦＦＦＦ:01:00.0", "0000:01:00.0\0", "0000:0g:00.0",
    ])
    func rejectsHostile(text: String) {
        #expect(PCIAddress(text) == nil)
    }

    @Test("slots parse; a slot is not a function and vice versa")
    func slots() {
        #expect(PCISlot("0000:01:00")?.description == "0000:01:00")
        #expect(PCISlot("0000:01:00.0") == nil)
        #expect(PCIAddress("0000:01:00") == nil)
        #expect(PCISlot("../../x") == nil)
        #expect(PCISlot("0000:01:1f")?.function(7)?.description == "0000:01:1f.7")
        #expect(PCISlot("10000:e0:00")?.function(0) == PCIAddress("10000:e0:00.0"))
        #expect(PCIAddressSelector("10000:e0:00")?.contains(PCIAddress("10000:e0:00.3")!) == true)
    }

    @Test("a selector takes either form and knows what it contains")
    func selectors() throws {
        let slot = try #require(PCIAddressSelector("0000:01:00"))
        let function = try #require(PCIAddressSelector("0000:01:00.1"))
        let other = try #require(PCIAddressSelector("0000:02:00.0"))
        #expect(slot.contains(PCIAddress("0000:01:00.0")!))
        #expect(slot.contains(PCIAddress("0000:01:00.7")!))
        #expect(!slot.contains(PCIAddress("0000:01:01.0")!))
        #expect(function.contains(PCIAddress("0000:01:00.1")!))
        #expect(!function.contains(PCIAddress("0000:01:00.0")!))
        #expect(slot.overlaps(function))
        #expect(function.overlaps(slot))
        #expect(!function.overlaps(other))
        #expect(!slot.overlaps(other))
        #expect(PCIAddressSelector("0000:01") == nil)
    }

    @Test("addresses sort by domain, bus, device, function")
    func ordering() {
        let sorted = ["10000:00:00.0", "0000:02:00.0", "0000:01:00.1", "ffff:00:00.0", "0001:00:00.0", "0000:01:00.0"]
            .compactMap(PCIAddress.init).sorted()
        #expect(sorted.map(\.description) == [
            "0000:01:00.0", "0000:01:00.1", "0000:02:00.0", "0001:00:00.0", "ffff:00:00.0", "10000:00:00.0",
        ])
    }
}

@Suite("PCI IDs and driver names")
struct PCIIDTests {
    @Test("IDs parse in either case and print lower-case", arguments: [
        ("10ee:903f", "10ee:903f"), ("10EE:9038", "10ee:9038"), ("8086:10d3", "8086:10d3"),
    ])
    func parses(text: String, printed: String) {
        #expect(PCIID(text)?.description == printed)
    }

    @Test("malformed IDs are rejected", arguments: [
        "", "10ee", "10ee:903", "10ee:903f0", "10ee-903f", "0x10ee:903f", "10ee:903g", "../x", "10ee:903f:1", " 10ee:903f",
    ])
    func rejects(text: String) {
        #expect(PCIID(text) == nil)
    }

    @Test("sysfs vendor/device attributes parse, and all-ones is recognised")
    func sysfsForm() {
        #expect(PCIID(sysfsVendor: "0x10ee\n", sysfsDevice: "0x903f\n") == PCIID("10ee:903f"))
        #expect(PCIID(sysfsVendor: "0xffff\n", sysfsDevice: "0xffff\n")?.isAllOnes == true)
        #expect(PCIID(sysfsVendor: "garbage", sysfsDevice: "0x903f") == nil)
        #expect(PCIID(sysfsVendor: "0x10000", sysfsDevice: "0x903f") == nil)
    }

    @Test("driver names cannot escape the drivers directory", arguments: [
        ("vfio-pci", true), ("xdma", true), ("snd_hda_intel", true), ("e1000e", true),
        ("", false), (".", false), ("..", false), ("../x", false), ("a/b", false), ("x y", false), (".hidden", false),
    ])
    func driverNames(text: String, valid: Bool) {
        #expect((DriverName(text) != nil) == valid)
    }

    @Test("host-driver policy: auto, none, a driver, never vfio-pci")
    func hostDriverPolicy() {
        #expect(HostDriverPolicy("auto") == .auto)
        #expect(HostDriverPolicy("none") == HostDriverPolicy.none)
        #expect(HostDriverPolicy("xdma") == .driver(DriverName("xdma")!))
        #expect(HostDriverPolicy("vfio-pci") == nil)
        #expect(HostDriverPolicy("../xdma") == nil)
    }
}
