/// Guest request protocol, version 1: what a guest may ask the agent over its request channel, one
/// line per request, and the one line it gets back.
///
/// A request is printable ASCII and spaces, at most ``maximumLength`` bytes, words separated by spaces
/// (leading, trailing and repeated spaces do not matter; one trailing carriage return, a Windows
/// guest's line end, is dropped). Verbs are lower case, as card names are. A guest names only cards,
/// by ``CardName``'s rules: never a PCI address, a driver or a path.
public enum GuestRequest: Hashable, Sendable, CustomStringConvertible {
    /// Take the card off the bus for a reflash (`reflash --prepare` from the guest).
    case prepare(CardName)
    /// Bring it back and re-attach it (`reflash --finish`).
    case finish(CardName)
    /// This guest's cards and where each stands.
    case status
    /// Which protocol the agent speaks.
    case version

    public static let protocolVersion = 1
    /// The longest line accepted, newline excluded.
    public static let maximumLength = 256

    public enum Verb: String, Hashable, Sendable, CaseIterable {
        case prepare, finish, status, version
    }

    public var verb: Verb {
        switch self {
        case .prepare: .prepare
        case .finish: .finish
        case .status: .status
        case .version: .version
        }
    }

    /// The request as a guest writes it, without the newline.
    public var description: String {
        switch self {
        case .prepare(let card), .finish(let card): "\(verb.rawValue) \(card)"
        case .status, .version: verb.rawValue
        }
    }

    /// Reads one line (its newline already taken off by the transport).
    public static func decode(_ line: some Collection<UInt8>) -> Result<GuestRequest, GuestRequestError> {
        var bytes = Array(line)
        if bytes.last == 0x0D { bytes.removeLast() }
        guard bytes.count <= maximumLength else { return .failure(.tooLong) }
        if let offending = bytes.first(where: { !($0 >= 0x20 && $0 <= 0x7E) }) {
            return .failure(offending >= 0x80 ? .notASCII : .controlCharacter)
        }
        // Every byte is printable ASCII now, so each word is a valid String.
        let words = bytes.split(separator: 0x20).map { String(decoding: $0, as: UTF8.self) }
        guard let first = words.first else { return .failure(.empty) }
        guard let verb = Verb(rawValue: first) else { return .failure(.unknownVerb(first)) }
        let arguments = words.dropFirst()
        switch verb {
        case .status, .version:
            guard arguments.isEmpty else { return .failure(.unexpectedArgument(verb)) }
            return .success(verb == .status ? .status : .version)
        case .prepare, .finish:
            guard arguments.count == 1, let text = arguments.first else { return .failure(.needsOneCard(verb)) }
            guard let card = CardName(text) else { return .failure(.notACardName(text)) }
            return .success(verb == .prepare ? .prepare(card) : .finish(card))
        }
    }
}

/// Why a line is not a request; the text of its `error bad-request` answer.
public enum GuestRequestError: Error, Hashable, Sendable, CustomStringConvertible {
    case empty
    case tooLong
    case notASCII
    /// A tab, NUL, escape or other control byte (only spaces separate words).
    case controlCharacter
    case unknownVerb(String)
    case unexpectedArgument(GuestRequest.Verb)
    case needsOneCard(GuestRequest.Verb)
    /// An address, a path, upper case: anything a card name cannot be.
    case notACardName(String)

    public var description: String {
        let verbs = GuestRequest.Verb.allCases.map(\.rawValue).joined(separator: ", ")
        return switch self {
        case .empty: "empty line: expected one of \(verbs)"
        case .tooLong: "line longer than \(GuestRequest.maximumLength) bytes"
        case .notASCII: "only ASCII is understood"
        case .controlCharacter: "control character in the line (words are separated by spaces only)"
        case .unknownVerb(let verb): "unknown request \(Self.echo(verb)): expected one of \(verbs) (lower case)"
        case .unexpectedArgument(let verb): "\(verb.rawValue) takes no argument"
        case .needsOneCard(let verb): "\(verb.rawValue) takes one card name, e.g. \(verb.rawValue) u200"
        case .notACardName(let text): "\(Self.echo(text)) is not a card name (lower-case letters, digits and '-')"
        }
    }

    /// A word of the guest's line quoted back: already printable ASCII, cut short.
    private static func echo(_ word: String) -> String {
        word.utf8.count <= 32 ? "'\(word)'" : "'\(word.prefix(32))...'"
    }
}

/// The one line the agent answers a request with: `ok TEXT` or `error CODE TEXT`.
public struct GuestAnswer: Hashable, Sendable, CustomStringConvertible {
    public enum Code: String, Hashable, Sendable, CaseIterable {
        /// Malformed, too long, not ASCII, an unknown verb.
        case badRequest = "bad-request"
        /// No such card for this guest: a card that does not exist and another guest's card look the same.
        case unknownCard = "unknown-card"
        /// Not allowed now: guest requests off for the card, the guest not running, a dry run, unsafe.
        case refused
        /// The card, or this guest's previous request, is being worked on.
        case busy
        case notOnBus = "not-on-bus"
        /// A step failed (and was rolled back), or the card did not come back.
        case failed
        /// Too many requests from this guest; try again later.
        case rateLimited = "rate-limited"
    }

    /// `nil` for `ok`.
    public var code: Code?
    public var text: String

    public static func ok(_ text: String) -> GuestAnswer { GuestAnswer(code: nil, text: text) }

    public static func error(_ code: Code, _ text: String) -> GuestAnswer { GuestAnswer(code: code, text: text) }

    public var isOK: Bool { code == nil }

    /// The answer to `version`.
    public static let version = GuestAnswer.ok("passthrough-agent guest-protocol \(GuestRequest.protocolVersion)")

    /// The line sent back, without its newline: printable ASCII whatever the text holds (anything else
    /// becomes `?`), so a guest's `read` and a terminal show exactly one line.
    public var line: String {
        let head = code.map { "error \($0.rawValue)" } ?? "ok"
        let body = String(decoding: text.utf8.prefix(Self.maximumTextLength).map { $0 >= 0x20 && $0 <= 0x7E ? $0 : 0x3F },
                          as: UTF8.self)
        return body.isEmpty ? head : "\(head) \(body)"
    }

    public var description: String { line }

    /// Long enough for a `status` of many cards; a bound, so an answer is never unbounded.
    static let maximumTextLength = 1024
}
