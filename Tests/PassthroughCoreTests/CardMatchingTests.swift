import PassthroughCore
import Testing

private func card(_ name: String, address: String? = nil, ids: [String] = []) -> CardConfig {
    CardConfig(name: CardName(name)!, address: address.flatMap(PCIAddressSelector.init),
               ids: ids.compactMap(PCIID.init), guest: GuestName("fpga-dev")!)
}

private func function(_ address: String, _ id: String, driver: String? = "xdma") -> PCIDeviceSnapshot {
    PCIDeviceSnapshot(address: PCIAddress(address)!, id: PCIID(id)!, driver: BoundDriver(driver.flatMap(DriverName.init)))
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

    @Test("an ids-only card last seen in one slot is looked for there only: a look-alike elsewhere is another card",
          arguments: [
              // (functions on the bus, last slot, outcome, look-alikes)
              (["0000:02:00.0"], "0000:01:00", "absent", ["0000:02:00"]),
              (["0000:01:00.0", "0000:02:00.0"], "0000:01:00", "present 0000:01:00.0", ["0000:02:00"]),
              (["0000:01:00.0"], "0000:01:00", "present 0000:01:00.0", []),
              (["0000:02:00.0"], nil, "present 0000:02:00.0", []),
              (["0000:01:00.0", "0000:02:00.0"], nil, "ambiguous", []),
          ] as [([String], String?, String, [String])])
    func lastSlot(on bus: [String], lastSlot: String?, outcome: String, lookalikes: [String]) {
        let resolution = CardResolution(card: card("u200", ids: ["10ee:903f"]), devices: bus.map { function($0, "10ee:903f") },
                                        lastSlot: lastSlot.flatMap(PCISlot.init))
        let seen = switch resolution.outcome {
        case .absent: "absent"
        case .ambiguous: "ambiguous"
        case .present(let functions): "present " + functions.map(\.address.description).joined(separator: ",")
        }
        #expect(seen == outcome)
        #expect(resolution.lookalikes.map(\.description) == lookalikes)
    }

    @Test("a card with an address is found by it, wherever it was last seen")
    func lastSlotIgnoredWithAddress() {
        let resolution = CardResolution(card: card("u200", address: "0000:02:00"), devices: [function("0000:02:00.0", "10ee:903f")],
                                        lastSlot: PCISlot("0000:01:00"))
        #expect(resolution.isPresent)
    }

    @Test("a PCI bridge (or a function whose driver cannot be read) makes a present card hands off", arguments: [
        (UInt32(0x060400), "pcieport", "bridge"), (0x060700, "yenta_cardbus", "bridge"), (0x060000, nil, "-"),
        (0x058000, "xdma", "-"), (0x058000, "?", "unreadable"),
    ] as [(UInt32, String?, String)])
    func handsOff(classCode: UInt32, driver: String?, expected: String) {
        let snapshot = PCIDeviceSnapshot(address: PCIAddress("0000:00:01.0")!, id: PCIID("8086:1901")!, classCode: classCode,
                                         driver: driver == "?" ? .unreadable("x y") : BoundDriver(driver.flatMap(DriverName.init)))
        let reason = CardResolution(card: card("port", address: "0000:00:01"), devices: [snapshot]).handsOff
        let kind = switch reason {
        case .bridge?: "bridge"
        case .unreadableDriver?: "unreadable"
        case nil: "-"
        }
        #expect(kind == expected)
        if case .bridge? = reason {
            #expect(reason?.description.hasPrefix("0000:00:01.0 is a PCI bridge (class 0x0\(String(classCode, radix: 16))), which is never") == true)
        }
    }
}

@Suite("IOMMU group interlock")
struct GroupInterlockTests {
    private func peer(_ address: String, _ driver: String?, classCode: UInt32 = 0x020000) -> GroupPeer {
        GroupPeer(address: PCIAddress(address)!, driver: BoundDriver(driver.flatMap(DriverName.init)), classCode: classCode)
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

    @Test("a peer whose driver name cannot be read blocks: it may be a host disk as well as nothing")
    func unreadablePeer() {
        var card = function("0000:01:00.0", "10ee:903f")
        card.groupPeers = [GroupPeer(address: PCIAddress("0000:01:00.6")!, driver: .unreadable("nvme\u{0}"), classCode: 0x010802)]
        let blocking = GroupInterlock.blockingPeers(of: [card])
        #expect(blocking.map(\.address.description) == ["0000:01:00.6"])
        #expect(blocking.first?.driver.description == "an unreadable driver (\"nvme\\u{0}\")")
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
