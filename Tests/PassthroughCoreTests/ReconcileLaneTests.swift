import PassthroughCore
import Testing

@Suite("Which cards may be reconciled side by side")
struct ReconcileLaneTests {
    private static func candidate(_ card: String, _ guest: String, groups: Set<Int> = []) -> ReconcileLane.Candidate {
        ReconcileLane.Candidate(card: CardName(card)!, guest: GuestName(guest)!, iommuGroups: groups)
    }

    private static func names(_ lanes: [ReconcileLane]) -> [[String]] {
        lanes.map { $0.cards.map(\.rawValue) }
    }

    struct Case: Sendable, CustomTestStringConvertible {
        var what: String
        var candidates: [ReconcileLane.Candidate]
        var held: Set<ReconcileLane.Claim> = []
        var lanes: [[String]]
        var waiting: [String] = []
        var testDescription: String { what }
    }

    static let cases: [Case] = [
        Case(what: "eight cards, two guests: two lanes, each in the given order",
             candidates: (0..<8).map { candidate("fpga\($0)", $0 < 4 ? "l2" : "l2b", groups: [10 + $0]) },
             lanes: [["fpga0", "fpga1", "fpga2", "fpga3"], ["fpga4", "fpga5", "fpga6", "fpga7"]]),
        Case(what: "a guest each: a lane each",
             candidates: [candidate("a", "g1", groups: [1]), candidate("b", "g2", groups: [2]), candidate("c", "g3")],
             lanes: [["a"], ["b"], ["c"]]),
        Case(what: "two guests sharing an IOMMU group: one lane (no peer moves between the group check and the bind)",
             candidates: [candidate("a", "g1", groups: [7]), candidate("b", "g2", groups: [7])],
             lanes: [["a", "b"]]),
        Case(what: "a card that joins two lanes (its guest one's, its group the other's) makes one of them, in order",
             candidates: [candidate("a", "g1", groups: [1]), candidate("b", "g2", groups: [2]), candidate("c", "g1", groups: [2]),
                          candidate("d", "g3", groups: [3])],
             lanes: [["a", "b", "c"], ["d"]]),
        Case(what: "a running lane holds the guest: its cards wait, the other guest's start",
             candidates: [candidate("a", "g1", groups: [1]), candidate("b", "g2", groups: [2])],
             held: [.guest(GuestName("g1")!), .card(CardName("x")!)],
             lanes: [["b"]], waiting: ["a"]),
        Case(what: "a running lane holds an IOMMU group: the card in it waits, and so does its guest's other card",
             candidates: [candidate("a", "g1", groups: [4]), candidate("b", "g1", groups: [5]), candidate("c", "g2", groups: [6])],
             held: [.iommuGroup(5)],
             lanes: [["c"]], waiting: ["a", "b"]),
        Case(what: "nothing due: no lane", candidates: [], held: [.guest(GuestName("g1")!)], lanes: []),
    ]

    @Test("lanes", arguments: cases)
    func lanes(_ example: Case) {
        let (lanes, waiting) = ReconcileLane.partition(example.candidates, held: example.held)
        #expect(Self.names(lanes) == example.lanes)
        #expect(waiting.map(\.rawValue) == example.waiting)
        // What each lane holds covers every claim of its cards, and no two lanes share one.
        for (index, lane) in lanes.enumerated() {
            for other in lanes[(index + 1)...] { #expect(lane.claims.isDisjoint(with: other.claims)) }
            for card in lane.cards { #expect(lane.claims.contains(.card(card))) }
        }
    }
}
