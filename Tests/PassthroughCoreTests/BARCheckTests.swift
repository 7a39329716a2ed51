import PassthroughCore
import Testing

private let u200 = CardConfig(name: CardName("u200")!, address: PCIAddressSelector("0000:01:00"),
                              ids: [PCIID("10ee:903f")!], guest: GuestName("fpga-dev")!)
private let function = PCIAddress("0000:01:00.0")!
private let port = PCIAddress("0000:00:01.0")!

private func card(on driver: String, below upstream: PCIAddress? = port) -> PCIDeviceSnapshot {
    PCIDeviceSnapshot(address: function, id: PCIID("10ee:903f")!, driver: BoundDriver(DriverName(driver)), upstreamPort: upstream)
}

private let bar0 = PCIBar(function: function, index: 0, size: 1 << 20, space: .memory, isAssigned: true)
private let bigBAR2 = PCIBar(function: function, index: 2, size: 256 << 20, space: .prefetchableMemory, is64Bit: true, isAssigned: false)

/// The plan for u200 on `driver` with BAR 0 placed and `bars` besides.
private func plan(_ bars: [PCIBar], guest: GuestActivity = .active, driver: String = "xdma", attached: Bool = false,
                  upstream: PCIAddress? = port, tried: BARReassignment? = nil, card config: CardConfig = u200) -> [String] {
    let observed = ObservedCard(card: config, devices: [card(on: driver, below: upstream)], guest: guest,
                                attached: attached ? [function] : [], history: CardHistory(barReassignment: tried), bars: [bar0] + bars)
    return Reconciler.plan(for: observed).map { step in
        switch step.action {
        case .bindVFIO: "bind-vfio"
        case .bindHost(let policy): "bind-host \(policy)"
        case .attach(let address, _): "attach \(address)"
        case .detach(let address, _): "detach \(address)"
        case .reassignBARs(let port): "reassign-bars \(port)"
        }
    }
}

@Suite("BAR check: a card with a BAR the kernel could not place")
struct BARCheckTests {
    @Test("every BAR placed: bound and attached as usual")
    func allPlaced() {
        #expect(plan([]) == ["bind-vfio", "attach 0000:01:00.0"])
    }

    @Test("a BAR unplaced, guest running, nothing tried yet: re-enumerate from above the port, neither bind nor attach")
    func escalatesOnce() {
        #expect(plan([bigBAR2]) == ["reassign-bars 0000:00:01.0"])
    }

    @Test("when-guest-stops = keep, guest stopped: also re-enumerated rather than bound to vfio-pci")
    func vfioIdle() throws {
        var keep = u200
        keep.whenGuestStops = .keep
        #expect(plan([bigBAR2], guest: .inactive, card: keep) == ["reassign-bars 0000:00:01.0"])
    }

    @Test("already tried for this layout (re-enumerated, or refused): left where it is, nothing planned",
          arguments: [BARReassignment.Outcome.reenumerated, .refused])
    func triedOnce(_ outcome: BARReassignment.Outcome) {
        let layout = CardBARs([bar0, bigBAR2]).unassignedLayout
        #expect(plan([bigBAR2], tried: BARReassignment(layout: layout, outcome: outcome)).isEmpty)
    }

    @Test("tried for another bitstream's layout: this one gets its own try")
    func otherLayout() {
        var smaller = bigBAR2
        smaller.size = 64 << 20
        let tried = BARReassignment(layout: CardBARs([smaller]).unassignedLayout, outcome: .reenumerated)
        #expect(plan([bigBAR2], tried: tried) == ["reassign-bars 0000:00:01.0"])
    }

    @Test("in the guest already, or no port above it: nothing removed, nothing bound")
    func neverUnderAGuest() {
        #expect(plan([bigBAR2], driver: "vfio-pci", attached: true).isEmpty)
        #expect(plan([bigBAR2], upstream: nil).isEmpty)
    }

    @Test("bound for the host, or the guest's state unknown: the BAR check does not move it")
    func hostPlacement() {
        #expect(plan([bigBAR2], guest: .inactive, driver: "vfio-pci") == ["bind-host auto"])
        #expect(plan([bigBAR2], guest: .unknown).isEmpty)
    }

    @Test("what the check says when it leaves the card alone")
    func leftAloneReasons() {
        let layout = CardBARs([bar0, bigBAR2]).unassignedLayout
        let observed = ObservedCard(card: u200, devices: [card(on: "xdma")], guest: .active, attached: [],
                                    history: CardHistory(barReassignment: BARReassignment(layout: layout, outcome: .refused,
                                                                                         detail: "0000:01:00.1 is below 0000:00:01.0 too")),
                                    bars: [bar0, bigBAR2])
        #expect(Reconciler.barCheck(observed) == .leftAlone("not re-enumerated: 0000:01:00.1 is below 0000:00:01.0 too"))
    }

    @Test("the fix: pci=realloc, the window size rounded up to a power of two, Above 4G for a 64-bit prefetchable BAR",
          arguments: [
              // (BARs, what the fix must say)
              ([bar0, bigBAR2], ["`pci=realloc`", "`pci=hpmmioprefsize=256M`", "Above 4G decoding"]),
              // 300M + 100M of prefetchable memory need a 512M window.
              ([PCIBar(function: function, index: 0, size: 300 << 20, space: .prefetchableMemory, isAssigned: false),
                PCIBar(function: function, index: 2, size: 100 << 20, space: .prefetchableMemory, isAssigned: true)],
               ["`pci=hpmmioprefsize=512M`"]),
              ([PCIBar(function: function, index: 0, size: 16 << 20, space: .memory, isAssigned: false)],
               ["`pci=realloc` or `pci=hpmmiosize=16M`"]),
          ])
    func fix(_ bars: [PCIBar], _ expected: [String]) {
        let fix = CardBARs(bars).fix
        for part in expected { #expect(fix.contains(part), "\(fix)") }
        if !bars.contains(where: { $0.is64Bit }) { #expect(!fix.contains("Above 4G")) }
    }

    @Test("status text: BAR 2 unassigned (256M)")
    func summary() {
        #expect(CardBARs([bar0, bigBAR2]).summary == "BAR 2 unassigned (256M)")
        #expect(PCIBar.sizeText(1 << 30) == "1G")
        #expect(PCIBar.sizeText(4096) == "4K")
        #expect(PCIBar.sizeText(1000) == "1000")
        #expect(PCIBar.roundedUpToPowerOfTwo(3 << 20) == 4 << 20)
        #expect(PCIBar.roundedUpToPowerOfTwo(1 << 20) == 1 << 20)
    }
}

@Suite("Link health after a re-enumeration")
struct LinkHealthTests {
    static let gen3x16 = PCILinkState(speed: 8, width: 16)

    @Test("the kernel's attribute text", arguments: [
        ("8.0 GT/s PCIe\n", "16\n", PCILinkState(speed: 8, width: 16) as PCILinkState?),
        ("2.5 GT/s\n", "1\n", PCILinkState(speed: 2.5, width: 1)),
        ("Unknown\n", "16\n", nil),
        ("8.0 GT/s PCIe\n", "0\n", nil),
    ])
    func parse(_ speed: String, _ width: String, _ expected: PCILinkState?) {
        #expect(PCILinkState(speed: speed, width: width) == expected)
    }

    @Test("verdicts", arguments: [
        // (now, before, capable, answers, verdict)
        (gen3x16 as PCILinkState?, gen3x16 as PCILinkState?, gen3x16 as PCILinkState?, true, LinkVerdict.healthy(gen3x16)),
        (PCILinkState(speed: 2.5, width: 16), gen3x16, gen3x16, true, .degraded("8 GT/s x16 before, 2.5 GT/s x16 now")),
        (PCILinkState(speed: 8, width: 1), nil, gen3x16, true, .degraded("8 GT/s x1, below the 8 GT/s x16 the card and its port can do")),
        (PCILinkState(speed: 8, width: 8), nil, PCILinkState(speed: 8, width: 8), true, .healthy(PCILinkState(speed: 8, width: 8))),
        (gen3x16, gen3x16, gen3x16, false, .degraded("its config space reads all-ones although the link trained")),
        (nil, gen3x16, gen3x16, true, .unknown),
    ])
    func verdict(_ now: PCILinkState?, _ before: PCILinkState?, _ capable: PCILinkState?, _ answers: Bool, _ expected: LinkVerdict) {
        #expect(LinkHealth.judge(now: now, before: before, capable: capable, answers: answers) == expected)
    }
}
