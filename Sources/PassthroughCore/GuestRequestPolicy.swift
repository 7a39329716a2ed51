/// Who may ask what over a guest's request channel. A request is honoured only for a card that
/// exists, has `guest-requests = true`, is lent to the domain whose channel carried the line, while that
/// domain runs. The answer never tells a guest more than it may know: another guest's card and a card
/// that does not exist get the same words.
public enum GuestRequestPolicy {
    /// A refusal: what the guest is told, and what the host owner reads in the journal.
    public struct Refusal: Error, Hashable, Sendable {
        public var answer: GuestAnswer
        public var journal: String
        /// The card concerned, when it exists (a name the guest invented is not a card).
        public var card: CardName?

        public init(_ code: GuestAnswer.Code, _ text: String, journal: String, card: CardName? = nil) {
            answer = .error(code, text)
            self.journal = journal
            self.card = card
        }
    }

    /// The card a guest names, if it may name it at all: it exists, is lent to `guest`, and takes requests.
    public static func card(_ name: CardName, for guest: GuestName, in config: AgentConfig) -> Result<CardConfig, Refusal> {
        let configured = config.card(named: name.rawValue)
        guard let card = configured, card.guest == guest else {
            let whose = configured.map { "which is lent to \($0.guest)" } ?? "which is not configured"
            return .failure(Refusal(.unknownCard, "no card \(name) for this guest",
                                    journal: "guest \(guest) asked for \(name), \(whose); refused", card: configured?.name))
        }
        guard card.guestRequests else {
            return .failure(Refusal(.refused, "guest requests are off for \(name) on this host (ask its owner for guest-requests = true)",
                                    journal: "guest \(guest) asked for \(name), whose guest-requests is off; refused", card: name))
        }
        return .success(card)
    }

    /// Whether a request for `card` (already found by ``card(_:for:in:)``) may be carried out now.
    /// - Parameter guestRunning: whether its guest runs as libvirt says; `nil` when libvirt cannot tell.
    public static func admit(_ request: GuestRequest, for card: CardConfig, guestRunning: Bool?, dryRun: Bool) -> Refusal? {
        switch guestRunning {
        case nil:
            return Refusal(.refused, "the host cannot confirm that this guest runs (libvirt does not answer); try again later",
                           journal: "guest \(card.guest) asked to \(request), but its state cannot be read; refused", card: card.name)
        case false?:
            return Refusal(.refused, "this guest is not running as far as the host can tell",
                           journal: "guest \(card.guest) asked to \(request), but libvirt does not report it running; refused",
                           card: card.name)
        case true?:
            break
        }
        if dryRun {
            return Refusal(.refused, "the agent runs as a dry run and changes nothing",
                           journal: "guest \(card.guest) asked to \(request); dry run, nothing changed", card: card.name)
        }
        return nil
    }

    /// The cards `status` reports to `guest`: its own, with guest requests on, in configuration order.
    public static func statusCards(for guest: GuestName, in config: AgentConfig) -> [CardConfig] {
        config.cards.filter { $0.guest == guest && $0.guestRequests }
    }

    /// The guests that may send requests at all: those lending a card with guest requests on.
    public static func requestingGuests(in config: AgentConfig) -> Set<GuestName> {
        Set(config.cards.filter(\.guestRequests).map(\.guest))
    }
}

/// A token bucket per guest: `burst` requests at once, then one more every `refill`. Time is passed in
/// (any monotonic origin), so the rule is tested without waiting.
public struct GuestRequestRateLimit: Hashable, Sendable {
    public let burst: Int
    public let refill: Duration
    private var tokens: Int
    private var lastRefill: Duration?
    /// Whether a request was turned away since the last one let through: the journal says so once per burst.
    private var limiting = false

    /// Five at once, then one every 5 s (12 a minute): enough for a person at a shell, `prepare`, `status`,
    /// `finish` and a typo, while a looping guest costs the host one journal line per burst.
    public static let standard = GuestRequestRateLimit(burst: 5, refill: .seconds(5))!

    public init?(burst: Int, refill: Duration) {
        guard burst > 0, refill > .zero else { return nil }
        self.burst = burst
        self.refill = refill
        tokens = burst
    }

    public enum Admission: Hashable, Sendable {
        case admitted
        /// Over the limit. `first`: the first line turned away since one was let through.
        case limited(first: Bool, retryAfter: Duration)
    }

    public mutating func admit(at now: Duration) -> Admission {
        replenish(at: now)
        guard tokens > 0 else {
            defer { limiting = true }
            let retryAfter = (lastRefill ?? now) + refill - now
            return .limited(first: !limiting, retryAfter: retryAfter)
        }
        tokens -= 1
        limiting = false
        return .admitted
    }

    private mutating func replenish(at now: Duration) {
        guard let last = lastRefill else {
            lastRefill = now
            return
        }
        let earned = Int((now - last) / refill)
        guard earned > 0 else { return }
        tokens = min(burst, tokens + earned)
        // A full bucket starts counting afresh; otherwise the part of an interval already waited counts.
        lastRefill = tokens == burst ? now : last + refill * earned
    }
}
