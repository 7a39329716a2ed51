import PassthroughCore
import PassthroughSysfs

/// One configured card as the host sees it now: what `status` prints.
public struct CardStatus: Encodable, Hashable, Sendable {
    public struct Function: Encodable, Hashable, Sendable {
        public var address: String
        public var id: String
        public var driver: String?
        /// What the `driver` link names when it is not a driver name (then `driver` is nil and the card is left alone).
        public var driverUnreadable: String?
        public var driverOverride: String?
        public var iommuGroup: Int?
    }

    public struct Peer: Encodable, Hashable, Sendable {
        public var address: String
        public var driver: String?
        /// What the `driver` link names when it is not a driver name; such a peer blocks vfio-pci.
        public var driverUnreadable: String?

        public init(address: String, driver: String?, driverUnreadable: String? = nil) {
            self.address = address
            self.driver = driver
            self.driverUnreadable = driverUnreadable
        }
    }

    public var name: String
    /// The configured address, or the slot the card was found in.
    public var address: String?
    public var present: Bool
    public var ids: [String]
    public var driver: String?
    public var iommuGroup: Int?
    /// Other devices in the card's IOMMU group(s); the card's own functions are in `functions`.
    public var groupPeers: [Peer]
    public var guest: String
    public var functions: [Function]
    /// Why the card cannot be used as configured, if it cannot.
    public var problem: String?
    /// What the running daemon says about the card (nil when no daemon answers).
    public var daemon: String?
    /// The link of its first function as trained (`8 GT/s x16`), with what it and its port can do when that is
    /// more; nil when the kernel does not say (not PCIe, not present).
    public var link: String?

    public init(resolution: CardResolution) {
        let card = resolution.card
        let functions = resolution.functions
        let own = Set(functions.map(\.address))
        name = card.name.rawValue
        guest = card.guest.rawValue
        present = resolution.isPresent
        address = card.address?.description ?? functions.first.map { $0.address.slot.description }
        ids = Array(Set(functions.map(\.id.description))).sorted()
        driver = functions.first?.driver.name?.rawValue
        iommuGroup = functions.first?.iommuGroup
        var peers: [PCIAddress: Peer] = [:]
        for function in functions {
            for peer in function.groupPeers where !own.contains(peer.address) {
                peers[peer.address] = Peer(address: peer.address.description, driver: peer.driver.name?.rawValue,
                                             driverUnreadable: peer.driver.unreadableText)
            }
        }
        groupPeers = peers.sorted { $0.key < $1.key }.map(\.value)
        self.functions = functions.map {
            Function(address: $0.address.description, id: $0.id.description, driver: $0.driver.name?.rawValue,
                     driverUnreadable: $0.driver.unreadableText, driverOverride: $0.driverOverride?.rawValue,
                     iommuGroup: $0.iommuGroup)
        }
        switch resolution.outcome {
        case .present:
            problem = resolution.handsOff?.description
        case .absent:
            problem = "not on the PCI bus"
        case .ambiguous(let slots):
            problem = "its ids match devices in \(slots.count) slots (\(slots.map(\.description).joined(separator: ", "))); give it an address"
        }
    }

    /// The status of every configured card, in config order.
    public static func all(config: AgentConfig, reader: PCISysfsReader) throws(SysfsError) -> [CardStatus] {
        let devices = try reader.allFunctions()
        return config.cards.map { card in
            let resolution = CardResolution(card: card, devices: devices)
            var status = CardStatus(resolution: resolution)
            if let first = resolution.functions.first { status.link = linkText(of: first, reader: reader) }
            return status
        }
    }

    /// `8 GT/s x16`, or `2.5 GT/s x16 (can do 8 GT/s x16)` when it trained below what both ends can do.
    static func linkText(of function: PCIDeviceSnapshot, reader: PCISysfsReader) -> String? {
        let (now, capable) = reader.trainedLink(of: function.address, below: function.upstreamPort)
        guard let now else { return nil }
        guard let capable, now.isWorse(than: capable) else { return "\(now)" }
        return "\(now) (can do \(capable))"
    }
}

extension BoundDriver {
    /// The link's text, for a driver whose name cannot be read.
    fileprivate var unreadableText: String? {
        if case .unreadable(let text) = self { return text }
        return nil
    }
}
