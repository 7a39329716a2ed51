import PassthroughCore

/// How long the pure core takes to turn one observation into a plan: the decision made per event.
enum ReconcileBenchmark {
    struct Result {
        var decisions: Int
        var p50: Duration
        var p99: Duration
        var max: Duration
    }

    static func run(decisions: Int = 100_000) -> Result {
        let cards = (0..<8).map { index in
            CardConfig(name: CardName("card-\(index)")!, address: PCIAddressSelector("0000:0\(index + 1):00"),
                       ids: [PCIID("10ee:903f")!, PCIID("10ee:9038")!], guest: GuestName("guest-\(index)")!)
        }
        // A host with 64 functions: the eight cards (two functions each) and bystanders.
        var devices: [PCIDeviceSnapshot] = []
        for (index, _) in cards.enumerated() {
            for function in 0..<2 {
                devices.append(PCIDeviceSnapshot(
                    address: PCIAddress("0000:0\(index + 1):00.\(function)")!, id: PCIID(function == 0 ? "10ee:903f" : "10ee:9038")!,
                    driver: BoundDriver(DriverName(index.isMultiple(of: 2) ? "xdma" : "vfio-pci"))))
            }
        }
        for bystander in 0..<48 {
            devices.append(PCIDeviceSnapshot(address: PCIAddress(domain: 0, bus: 0x40, device: UInt8(bystander % 32), function: UInt8(bystander / 32))!,
                                             id: PCIID("8086:10d3")!, driver: BoundDriver(DriverName("e1000e"))))
        }
        let activities: [GuestActivity] = [.active, .inactive, .unknown]
        var samples: [Duration] = []
        samples.reserveCapacity(decisions)
        let clock = ContinuousClock()
        var steps = 0
        for index in 0..<decisions {
            let card = cards[index % cards.count]
            let guest = activities[index % activities.count]
            let elapsed = clock.measure {
                let observed = ObservedCard(card: card, devices: devices, guest: guest, attached: [])
                steps &+= Reconciler.plan(for: observed).count
            }
            samples.append(elapsed)
        }
        precondition(steps > 0)
        samples.sort()
        return Result(decisions: decisions, p50: samples[samples.count / 2], p99: samples[samples.count * 99 / 100], max: samples.last!)
    }
}
