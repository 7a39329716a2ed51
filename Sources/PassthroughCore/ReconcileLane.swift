/// Cards whose reconciles run one after another, beside other lanes.
///
/// Eight cards reflashed at once should not come back one after another: most of a re-attach is waiting
/// (for a driver's remove, for libvirt's job, for QEMU), and those waits can overlap — each card's driver
/// moves while another card's attach runs, different guests' attaches side by side (one guest's attaches
/// queue for it, libvirt running one job per domain). But two cards' moves must never interleave when they
/// share an IOMMU group: the check that no peer is in use by the host (``GroupInterlock``) holds only while
/// no one else moves a peer between the check and the bind.
///
/// So cards connected by a shared IOMMU group form one lane, and a lane runs only while no running lane
/// holds any of its claims. A card off the bus has no groups at the scan a lane starts from; should it
/// appear during the lane, its lane takes the groups it is in now by the same rule before moving it, and
/// when another lane holds one the card waits until that lane has ended.
public struct ReconcileLane: Hashable, Sendable {
    /// What a running lane holds, so no other lane takes it meanwhile.
    public enum Claim: Hashable, Sendable, CustomStringConvertible {
        case card(CardName)
        case iommuGroup(Int)

        public var description: String {
            switch self {
            case .card(let name): "card \(name)"
            case .iommuGroup(let group): "IOMMU group \(group)"
            }
        }
    }

    /// A card due for a reconcile, with the IOMMU groups of its functions in the bus scan the lanes start
    /// from (none when it is not on the bus).
    public struct Candidate: Hashable, Sendable {
        public var card: CardName
        public var iommuGroups: Set<Int>

        public init(card: CardName, iommuGroups: Set<Int> = []) {
            self.card = card
            self.iommuGroups = iommuGroups
        }

        var claims: Set<Claim> {
            Set([.card(card)] + iommuGroups.map(Claim.iommuGroup))
        }
    }

    /// In the order the candidates were given.
    public var cards: [CardName]
    public var claims: Set<Claim>

    /// Lanes for `candidates`, each in the candidates' order: those to start now, and the cards that wait
    /// because their lane shares a claim with one in `held` (a lane already running).
    public static func partition(_ candidates: [Candidate], held: Set<Claim>) -> (lanes: [ReconcileLane], waiting: [CardName]) {
        var lanes: [ReconcileLane] = []
        for candidate in candidates {
            let claims = candidate.claims
            // A card may join several lanes together (a multi-function card whose functions sit in two groups).
            let joined = lanes.indices.filter { !lanes[$0].claims.isDisjoint(with: claims) }
            var lane = ReconcileLane(cards: [], claims: claims)
            for index in joined {
                lane.cards += lanes[index].cards
                lane.claims.formUnion(lanes[index].claims)
            }
            lane.cards.append(candidate.card)
            for index in joined.reversed() { lanes.remove(at: index) }
            lanes.append(lane)
        }
        let order = Dictionary(candidates.enumerated().map { ($1.card, $0) }, uniquingKeysWith: { first, _ in first })
        for index in lanes.indices { lanes[index].cards.sort { order[$0, default: 0] < order[$1, default: 0] } }
        lanes.sort { order[$0.cards[0], default: 0] < order[$1.cards[0], default: 0] }
        let ready = lanes.filter { $0.claims.isDisjoint(with: held) }
        return (ready, lanes.filter { !$0.claims.isDisjoint(with: held) }.flatMap(\.cards))
    }
}
