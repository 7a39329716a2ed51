import PassthroughCore
import Testing

private func card(_ name: String, address: String? = nil, ids: [String] = []) -> CardConfig {
    CardConfig(name: CardName(name)!, address: address.flatMap(PCIAddressSelector.init),
               ids: ids.compactMap(PCIID.init), guest: GuestName("fpga-dev")!)
}

private func function(_ address: String, _ id: String, driver: String? = "xdma") -> PCIDeviceSnapshot {
    PCIDeviceSnapshot(address: PCIAddress(address)!, id: PCIID(id)!, driver: driver.flatMap(DriverName.init))
}

@Suite("Which devices a card claims")
struct CardMatchingTests {
    @Test("address, ids, or both decide", arguments: [
        // (address, ids, device address, device id, claims)
        ("0000:01:00", [], "0000:01:00.1", "1234:5678", true),
        ("0000:01:00.0", [], "0000:01:00.1", "10ee:903f", false),
        (nil, ["10ee:903f", "10ee:9038"], "0000:05:00.0", "10ee:9038", true),
        (nil, ["10ee:903f"], "0000:05:00.0", "10ee:9038", false),
        ("0000:01:00", ["10ee:903f"], "0000:01:00.0", "10ee:903f", true),
        ("0000:01:00", ["10ee:903f"], "0000:01:00.0", "8086:10d3", false),
        ("0000:01:00", ["10ee:903f"], "0000:02:00.0", "10ee:903f", false),
    ] as [(String?, [String], String, String, Bool)])
    func matching(address: String?, ids: [String], deviceAddress: String, deviceID: String, claims: Bool) {
        let card = card("u200", address: address, ids: ids)
        #expect(card.matches(address: PCIAddress(deviceAddress)!, id: PCIID(deviceID)!) == claims)
    }

    @Test("two cards overlap when one device could satisfy both", arguments: [
        ("0000:01:00", [], "0000:01:00.1", [], true),
        ("0000:01:00", [], "0000:02:00", [], false),
        ("0000:01:00", [], nil, ["10ee:903f"], true),
        (nil, ["10ee:903f"], nil, ["10ee:9038"], false),
        (nil, ["10ee:903f", "10ee:9038"], nil, ["10ee:9038"], true),
        ("0000:01:00", ["10ee:903f"], "0000:01:00", ["8086:10d3"], false),
        ("0000:01:00.0", [], "0000:01:00.1", [], false),
    ] as [(String?, [String], String?, [String], Bool)])
    func overlap(addressA: String?, idsA: [String], addressB: String?, idsB: [String], overlaps: Bool) {
        let a = card("a", address: addressA, ids: idsA)
        let b = card("b", address: addressB, ids: idsB)
        #expect(a.canMatchSameDevice(as: b) == overlaps)
        #expect(b.canMatchSameDevice(as: a) == overlaps)
    }

    @Test("a card resolves to the functions of one slot, or is absent, or ambiguous")
    func resolution() {
        let bus = [
            function("0000:01:00.1", "10ee:9038"), function("0000:01:00.0", "10ee:903f"),
            function("0000:02:00.0", "10ee:903f"), function("0000:03:00.0", "8086:10d3", driver: "e1000e"),
        ]
        let bySlot = CardResolution(card: card("u200", address: "0000:01:00"), devices: bus)
        #expect(bySlot.functions.map(\.address.description) == ["0000:01:00.0", "0000:01:00.1"])

        let byIDs = CardResolution(card: card("u200", ids: ["10ee:903f"]), devices: bus)
        #expect(byIDs.outcome == .ambiguous([PCISlot("0000:01:00")!, PCISlot("0000:02:00")!]))
        #expect(!byIDs.isPresent)

        let gone = CardResolution(card: card("u200", address: "0000:07:00"), devices: bus)
        #expect(gone.outcome == .absent)

        // After a reflash the card shows another ID from its list: still the same card.
        let reflashed = CardResolution(card: card("u200", address: "0000:01:00", ids: ["10ee:903f", "10ee:9038"]),
                                       devices: [function("0000:01:00.0", "10ee:9038")])
        #expect(reflashed.functions.map(\.id.description) == ["10ee:9038"])
    }
}

@Suite("IOMMU group interlock")
struct GroupInterlockTests {
    private func peer(_ address: String, _ driver: String?, classCode: UInt32 = 0x020000) -> GroupPeer {
        GroupPeer(address: PCIAddress(address)!, driver: driver.flatMap(DriverName.init), classCode: classCode)
    }

    @Test("peers on host drivers block; vfio-pci, pci-stub, driverless and bridges do not")
    func blocking() {
        var card = function("0000:01:00.0", "10ee:903f")
        card.groupPeers = [
            peer("0000:00:01.0", "pcieport", classCode: 0x060400),
            peer("0000:01:00.2", "vfio-pci"), peer("0000:01:00.3", "pci-stub"), peer("0000:01:00.4", nil),
            peer("0000:01:00.5", "snd_hda_intel"),
        ]
        #expect(GroupInterlock.blockingPeers(of: [card]).map(\.address.description) == ["0000:01:00.5"])
    }

    @Test("the card's own functions move together and do not block each other")
    func ownFunctions() {
        var f0 = function("0000:01:00.0", "10ee:903f")
        var f1 = function("0000:01:00.1", "10ee:9038")
        f0.groupPeers = [peer("0000:01:00.1", "xdma")]
        f1.groupPeers = [peer("0000:01:00.0", "xdma")]
        #expect(GroupInterlock.blockingPeers(of: [f0, f1]).isEmpty)
        #expect(GroupInterlock.blockingPeers(of: [f0]).map(\.address.description) == ["0000:01:00.1"])
    }
}
