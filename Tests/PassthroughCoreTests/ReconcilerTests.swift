import PassthroughCore
import Testing

private let u200 = CardConfig(name: CardName("u200")!, address: PCIAddressSelector("0000:01:00"),
                              ids: [PCIID("10ee:903f")!, PCIID("10ee:9038")!], guest: GuestName("fpga-dev")!)

private func fn(_ address: String, _ driver: String?, id: String = "10ee:903f") -> PCIDeviceSnapshot {
    PCIDeviceSnapshot(address: PCIAddress(address)!, id: PCIID(id)!, driver: BoundDriver(driver.flatMap(DriverName.init)))
}

private func plan(_ devices: [PCIDeviceSnapshot], guest: GuestActivity, attached: [String] = []) -> [String] {
    plan(u200, devices, guest: guest, attached: attached)
}

private func plan(_ card: CardConfig, _ devices: [PCIDeviceSnapshot], guest: GuestActivity, attached: [String] = [],
                  history: CardHistory = CardHistory()) -> [String] {
    Reconciler.plan(for: ObservedCard(card: card, devices: devices, guest: guest,
                                      attached: Set(attached.compactMap(PCIAddress.init)), history: history)).map { step in
        switch step.action {
        case .bindVFIO: "bind-vfio"
        case .bindHost(let policy): "bind-host \(policy)"
        case .attach(let address, let guest): "attach \(address) \(guest)"
        case .detach(let address, let guest): "detach \(address) \(guest)"
        case .reassignBARs(let port): "reassign-bars \(port)"
        }
    }
}

@Suite("Reconciler: from (actual, desired) to a plan")
struct ReconcilerTests {
    @Test("guest running, card on xdma: bind to vfio-pci, then attach every function")
    func guestStarts() {
        #expect(plan([fn("0000:01:00.0", "xdma"), fn("0000:01:00.1", "xdma", id: "10ee:9038")], guest: .active)
            == ["bind-vfio", "attach 0000:01:00.0 fpga-dev", "attach 0000:01:00.1 fpga-dev"])
    }

    @Test("guest running, card on vfio-pci and attached: nothing to do")
    func converged() {
        #expect(plan([fn("0000:01:00.0", "vfio-pci")], guest: .active, attached: ["0000:01:00.0"]).isEmpty)
    }

    @Test("reflash: the card came back on xdma with a new ID while the guest runs")
    func reflashNewID() {
        #expect(plan([fn("0000:01:00.0", "xdma", id: "10ee:9038")], guest: .active)
            == ["bind-vfio", "attach 0000:01:00.0 fpga-dev"])
    }

    @Test("card on vfio-pci but not attached (libvirt dropped it): attach only")
    func reattachOnly() {
        #expect(plan([fn("0000:01:00.0", "vfio-pci")], guest: .active) == ["attach 0000:01:00.0 fpga-dev"])
    }

    @Test("card absent or ambiguous: no step, whatever the guest does")
    func absent() {
        #expect(plan([], guest: .active).isEmpty)
        let byIDs = CardConfig(name: CardName("x")!, ids: [PCIID("10ee:903f")!], guest: GuestName("vm")!)
        #expect(plan(byIDs, [fn("0000:01:00.0", "xdma"), fn("0000:02:00.0", "xdma")], guest: .active).isEmpty)
    }

    @Test("guest stopped: back to the host per policy, or kept on vfio-pci", arguments: [
        // (when-guest-stops, host-driver, driver, driver_override, probed since it appeared, plan)
        (GuestStopPolicy.host, HostDriverPolicy.auto, "vfio-pci", nil, false, ["bind-host auto"]),
        (.host, .auto, "xdma", nil, false, []),
        // Driverless (an interrupted give-back, a kill -9 between unbind and probe): the kernel is asked once...
        (.host, .auto, nil, nil, false, ["bind-host auto"]),
        // ...and a function still driverless after that is where the kernel wants it: no loop.
        (.host, .auto, nil, nil, true, []),
        // An override left behind sends the next probe to vfio-pci: cleared even after a probe, even on xdma.
        (.host, .auto, nil, "vfio-pci", true, ["bind-host auto"]),
        (.host, .auto, "xdma", "vfio-pci", true, ["bind-host auto"]),
        (.host, .driver(DriverName("xdma")!), "vfio-pci", nil, false, ["bind-host xdma"]),
        (.host, .driver(DriverName("xdma")!), nil, nil, true, ["bind-host xdma"]),
        (.host, .driver(DriverName("xdma")!), "xdma", "xdma", false, []),
        (.host, .driver(DriverName("xdma")!), "xdma", nil, false, []),
        (.host, .driver(DriverName("xdma")!), "xdma", "vfio-pci", false, ["bind-host xdma"]),
        (.host, .none, "vfio-pci", nil, false, ["bind-host none"]),
        (.host, .none, nil, nil, false, []),
        (.host, .none, nil, "vfio-pci", false, ["bind-host none"]),
        (.keep, .auto, "vfio-pci", "vfio-pci", false, []),
        (.keep, .auto, "xdma", nil, false, ["bind-vfio"]),
        (.keep, .auto, nil, nil, false, ["bind-vfio"]),
    ] as [(GuestStopPolicy, HostDriverPolicy, String?, String?, Bool, [String])])
    func guestStopped(stops: GuestStopPolicy, hostDriver: HostDriverPolicy, driver: String?, override: String?,
                      probed: Bool, expected: [String]) {
        var card = u200
        card.whenGuestStops = stops
        card.hostDriver = hostDriver
        var function = fn("0000:01:00.0", driver)
        function.driverOverride = override.flatMap(DriverName.init)
        let history = CardHistory(probedForHost: probed ? [function.address] : [])
        #expect(plan(card, [function], guest: .inactive, history: history) == expected)
    }

    @Test("probed once per appearance is per function: a second, unprobed driverless function is still probed")
    func probedPerFunction() {
        let history = CardHistory(probedForHost: [PCIAddress("0000:01:00.0")!])
        #expect(plan(u200, [fn("0000:01:00.0", nil), fn("0000:01:00.1", nil, id: "10ee:9038")], guest: .inactive, history: history)
            == ["bind-host auto"])
        let steps = Reconciler.plan(for: ObservedCard(card: u200, devices: [fn("0000:01:00.0", nil), fn("0000:01:00.1", nil, id: "10ee:9038")],
                                                      guest: .inactive, attached: [], history: history))
        #expect(steps.first?.reason == "fpga-dev is not running and 0000:01:00.1 has no driver and has not been probed since it appeared")
        #expect(steps.first?.slot == PCISlot("0000:01:00"))
    }

    @Test("a function whose driver cannot be read: the card is left exactly where it is, whatever the guest does",
          arguments: [GuestActivity.active, .inactive], [GuestStopPolicy.host, .keep])
    func unreadableDriver(guest: GuestActivity, stops: GuestStopPolicy) {
        var card = u200
        card.whenGuestStops = stops
        var held = fn("0000:01:00.1", nil, id: "10ee:9038")
        held.driver = .unreadable("xdma\u{202e}")
        #expect(plan(card, [fn("0000:01:00.0", "vfio-pci"), held], guest: guest).isEmpty)
        #expect(plan(card, [fn("0000:01:00.0", "xdma"), held], guest: guest).isEmpty)
    }

    @Test("a PCI bridge matched as a card is never moved, whatever the guest does",
          arguments: [GuestActivity.active, .inactive])
    func bridge(guest: GuestActivity) {
        let port = CardConfig(name: CardName("port")!, address: PCIAddressSelector("0000:00:01"), guest: GuestName("fpga-dev")!)
        let root = PCIDeviceSnapshot(address: PCIAddress("0000:00:01.0")!, id: PCIID("8086:1901")!, classCode: 0x060400,
                                     driver: .bound(DriverName("pcieport")!))
        #expect(plan(port, [root], guest: guest).isEmpty)
        #expect(ObservedCard(card: port, devices: [root], guest: guest, attached: []).resolution.handsOff
            == .bridge(root.address, classCode: 0x060400))
    }

    @Test("libvirt unreachable: the card is left exactly where it is")
    func unknownGuest() {
        #expect(plan([fn("0000:01:00.0", "xdma")], guest: .unknown).isEmpty)
        #expect(plan([fn("0000:01:00.0", "vfio-pci")], guest: .unknown).isEmpty)
    }

    @Test("guest crashed, its QEMU kept (on_crash=preserve): no attach, no unbind, whatever the policy and driver",
          arguments: [GuestStopPolicy.host, .keep], ["vfio-pci", "xdma", nil] as [String?])
    func crashedGuest(stops: GuestStopPolicy, driver: String?) {
        var card = u200
        card.whenGuestStops = stops
        #expect(plan(card, [fn("0000:01:00.0", driver)], guest: .crashed).isEmpty)
    }

    @Test("a crashed guest's card is left where it is, and the placement says why and what releases it")
    func crashedPlacement() {
        let placement = Placement(card: u200, guest: .crashed)
        #expect(placement == .heldByCrashedGuest(GuestName("fpga-dev")!))
        #expect(placement.description.contains("fpga-dev crashed and its QEMU still holds the card"))
        #expect(placement.description.contains("virsh destroy fpga-dev"))
    }

    @Test("the same observation always gives the same plan (level-triggered)")
    func deterministic() {
        let devices = [fn("0000:01:00.1", "xdma", id: "10ee:9038"), fn("0000:01:00.0", "xdma")]
        let first = plan(devices, guest: .active)
        for _ in 0..<10 { #expect(plan(devices.shuffled(), guest: .active) == first) }
    }

    @Test("every step explains itself")
    func reasons() {
        let steps = Reconciler.plan(for: ObservedCard(card: u200, devices: [fn("0000:01:00.0", "xdma")], guest: .active, attached: []))
        #expect(steps.first?.description == "u200: bind to vfio-pci (fpga-dev is running and the card is on xdma)")
        #expect(steps.last?.description == "u200: attach 0000:01:00.0 to fpga-dev (fpga-dev is running without it)")
    }
}
