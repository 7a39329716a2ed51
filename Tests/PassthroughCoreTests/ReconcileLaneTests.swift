import PassthroughCore
import Testing

@Suite("Which cards may be reconciled side by side")
struct ReconcileLaneTests {
    private static func candidate(_ card: String, groups: Set<Int> = []) -> ReconcileLane.Candidate {
        ReconcileLane.Candidate(card: CardName(card)!, iommuGroups: groups)
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
        Case(what: "eight cards, a group each: eight lanes side by side",
             candidates: (0..<8).map { candidate("fpga\($0)", groups: [10 + $0]) },
             lanes: (0..<8).map { ["fpga\($0)"] }),
        Case(what: "two cards sharing an IOMMU group: one lane (no peer moves between the group check and the bind)",
             candidates: [candidate("a", groups: [7]), candidate("b", groups: [3]), candidate("c", groups: [7])],
             lanes: [["a", "c"], ["b"]]),
        Case(what: "a card whose functions sit in two groups joins both lanes into one, in the given order",
             candidates: [candidate("a", groups: [1]), candidate("b", groups: [2]), candidate("c", groups: [1, 2]),
                          candidate("d", groups: [3])],
             lanes: [["a", "b", "c"], ["d"]]),
        Case(what: "cards off the bus (no groups at the scan): a lane each",
             candidates: [candidate("a"), candidate("b")],
             lanes: [["a"], ["b"]]),
        Case(what: "a running lane holds an IOMMU group: the card in it waits, and so does its lane-mate",
             candidates: [candidate("a", groups: [4]), candidate("b", groups: [5]), candidate("c", groups: [5, 6]),
                          candidate("d", groups: [8])],
             held: [.iommuGroup(6)],
             lanes: [["a"], ["d"]], waiting: ["b", "c"]),
        Case(what: "a running lane holds the card itself: it waits",
             candidates: [candidate("a", groups: [1]), candidate("b", groups: [2])],
             held: [.card(CardName("a")!)],
             lanes: [["b"]], waiting: ["a"]),
        Case(what: "nothing due: no lane", candidates: [], held: [.iommuGroup(1)], lanes: []),
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
