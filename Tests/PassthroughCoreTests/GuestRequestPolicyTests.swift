import PassthroughCore
import Testing

@Suite("Guest requests: who may ask, and how often")
struct GuestRequestPolicyTests {
    private static func card(_ name: String, lentTo guest: String, requests: Bool) -> CardConfig {
        CardConfig(name: CardName(name)!, ids: [PCIID("10ee:903f")!], guest: GuestName(guest)!, guestRequests: requests)
    }

    /// u200 lent to fpga-dev with requests on, u250 lent to fpga-test with requests on, u55 lent to
    /// fpga-dev with requests off.
    static let config = AgentConfig(cards: [
        card("u200", lentTo: "fpga-dev", requests: true),
        card("u250", lentTo: "fpga-test", requests: true),
        card("u55", lentTo: "fpga-dev", requests: false),
    ])

    static let fpgaDev = GuestName("fpga-dev")!
    static let fpgaTest = GuestName("fpga-test")!

    @Test("authorization table", arguments: [
        // (card, asking guest, wire answer, or nil when the card may be asked for)
        ("u200", "fpga-dev", nil),
        ("u250", "fpga-test", nil),
        // Another guest's card reads exactly like a card that does not exist.
        ("u250", "fpga-dev", "error unknown-card no card u250 for this guest"),
        ("u200", "fpga-test", "error unknown-card no card u200 for this guest"),
        ("nosuch", "fpga-dev", "error unknown-card no card nosuch for this guest"),
        ("u200", "stranger", "error unknown-card no card u200 for this guest"),
        // Its own card, but the host owner did not turn requests on.
        ("u55", "fpga-dev", "error refused guest requests are off for u55 on this host (ask its owner for guest-requests = true)"),
        ("u55", "fpga-test", "error unknown-card no card u55 for this guest"),
    ])
    func authorization(card: String, guest: String, answer: String?) {
        let result = GuestRequestPolicy.card(CardName(card)!, for: GuestName(guest)!, in: Self.config)
        switch result {
        case .success(let found):
            #expect(answer == nil)
            #expect(found.name.rawValue == card)
        case .failure(let refusal):
            #expect(refusal.answer.line == answer)
        }
    }

    @Test("an unknown-card answer never names the card's real guest; the journal does")
    func noLeak() throws {
        let refusal = try #require(GuestRequestPolicy.card(CardName("u250")!, for: Self.fpgaDev, in: Self.config).failure)
        #expect(!refusal.answer.line.contains("fpga-test"))
        #expect(refusal.journal == "guest fpga-dev asked for u250, which is lent to fpga-test; refused")
        #expect(refusal.card == CardName("u250"))
        let invented = try #require(GuestRequestPolicy.card(CardName("nosuch")!, for: Self.fpgaDev, in: Self.config).failure)
        #expect(invented.card == nil)
        #expect(invented.journal == "guest fpga-dev asked for nosuch, which is not configured; refused")
    }

    @Test("admission: the guest must run, and a dry run changes nothing", arguments: [
        // (guest running?, dry run, wire answer or nil)
        (true as Bool?, false, nil as String?),
        (false, false, "error refused this guest is not running as far as the host can tell"),
        (nil, false, "error refused the host cannot confirm that this guest runs (libvirt does not answer); try again later"),
        (true, true, "error refused the agent runs as a dry run and changes nothing"),
        (false, true, "error refused this guest is not running as far as the host can tell"),
    ])
    func admission(running: Bool?, dryRun: Bool, answer: String?) {
        let u200 = Self.config.cards[0]
        for request in [GuestRequest.prepare(u200.name), .finish(u200.name)] {
            let refusal = GuestRequestPolicy.admit(request, for: u200, guestRunning: running, dryRun: dryRun)
            #expect(refusal?.answer.line == answer)
        }
    }

    @Test("status lists only the guest's own cards with requests on; watched guests are those lending one")
    func statusAndWatch() {
        #expect(GuestRequestPolicy.statusCards(for: Self.fpgaDev, in: Self.config).map(\.name.rawValue) == ["u200"])
        #expect(GuestRequestPolicy.statusCards(for: Self.fpgaTest, in: Self.config).map(\.name.rawValue) == ["u250"])
        #expect(GuestRequestPolicy.statusCards(for: GuestName("stranger")!, in: Self.config).isEmpty)
        #expect(GuestRequestPolicy.requestingGuests(in: Self.config) == [Self.fpgaDev, Self.fpgaTest])
        #expect(GuestRequestPolicy.requestingGuests(in: AgentConfig(cards: [Self.config.cards[2]])).isEmpty)
    }

    // MARK: Rate limit

    /// Admits at the given seconds; what each got.
    private static func admissions(_ limit: GuestRequestRateLimit, at seconds: [Double]) -> [String] {
        var limit = limit
        return seconds.map { second in
            switch limit.admit(at: .milliseconds(Int64(second * 1000))) {
            case .admitted: "ok"
            case .limited(let first, let retryAfter): "limited\(first ? "!" : "") \(retryAfter)"
            }
        }
    }

    @Test("token bucket: a burst at once, then one per refill; only the first line turned away of a burst is flagged")
    func bucket() throws {
        let limit = try #require(GuestRequestRateLimit(burst: 3, refill: .seconds(10)))
        #expect(Self.admissions(limit, at: [0, 0, 0, 0, 1, 2]) == [
            "ok", "ok", "ok", "limited! 10.0 seconds", "limited 9.0 seconds", "limited 8.0 seconds",
        ])
        // One token back after 10 s, one more after 20 s; then turned away again, flagged anew.
        #expect(Self.admissions(limit, at: [0, 0, 0, 10, 10, 20, 20.5]) == [
            "ok", "ok", "ok", "ok", "limited! 10.0 seconds", "ok", "limited! 9.5 seconds",
        ])
        // A quiet minute fills the bucket to its burst, no more.
        #expect(Self.admissions(limit, at: [0, 0, 0, 60, 60, 60, 60]) == ["ok", "ok", "ok", "ok", "ok", "ok", "limited! 10.0 seconds"])
        // Time waited while the bucket was not full counts toward the next token.
        #expect(Self.admissions(limit, at: [0, 0, 0, 15, 15, 20]) == ["ok", "ok", "ok", "ok", "limited! 5.0 seconds", "ok"])
    }

    @Test("the standard limit: five at once, then one every 5 s")
    func standard() {
        #expect(GuestRequestRateLimit.standard.burst == 5)
        #expect(GuestRequestRateLimit.standard.refill == .seconds(5))
        #expect(GuestRequestRateLimit(burst: 0, refill: .seconds(1)) == nil)
        #expect(GuestRequestRateLimit(burst: 1, refill: .zero) == nil)
    }
}

extension Result {
    fileprivate var failure: Failure? {
        if case .failure(let error) = self { return error }
        return nil
    }
}
