#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// One card in a `status` response.
public struct ControlCardStatus: Codable, Hashable, Sendable {
    public var name: String
    public var state: String
    public var detail: String?

    public init(name: String, state: String, detail: String? = nil) {
        self.name = name
        self.state = state
        self.detail = detail
    }
}

/// The answer to one request: `{"ok":true,...}`, or `{"ok":false,"code":"...","error":"..."}` on
/// one line: `code` (``ControlFailureCode``) for scripts, `error` for people.
public struct ControlResponse: Codable, Hashable, Sendable {
    public var ok: Bool
    public var code: ControlFailureCode?
    public var error: String?
    public var message: String?
    public var cards: [ControlCardStatus]?

    public init(ok: Bool, code: ControlFailureCode? = nil, error: String? = nil, message: String? = nil,
                cards: [ControlCardStatus]? = nil) {
        self.ok = ok
        self.code = code
        self.error = error
        self.message = message
        self.cards = cards
    }

    public static func success(_ message: String? = nil, cards: [ControlCardStatus]? = nil) -> ControlResponse {
        ControlResponse(ok: true, message: message, cards: cards)
    }

    public static func failure(_ error: String, code: ControlFailureCode = .failed) -> ControlResponse {
        ControlResponse(ok: false, code: code, error: error)
    }

    /// What a peer that is not allowed gets, before the connection is closed.
    public static let permissionDenied = failure("permission denied", code: .permissionDenied)

    /// What a connection over ``ControlServer/Limits/maximumConnections`` gets, before it is closed.
    public static func tooManyConnections(_ limit: Int) -> ControlResponse {
        failure("too many connections to the agent (\(limit)); try again", code: .busy)
    }

    /// What a connection that sent no request in time gets, before it is closed.
    static func idle(after timeout: Duration) -> ControlResponse {
        failure("no request within \(timeout); closing the connection", code: .badRequest)
    }

    private enum CodingKeys: String, CodingKey {
        case ok, code, error, message, cards
    }

    /// Compact JSON and a newline, `ok` first so the line reads well in a terminal (the
    /// encoder's own key order is not ours to choose). JSON escapes control characters, so it is
    /// always one line.
    public var line: [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        var json = Array(#"{"ok":\#(ok)"#.utf8)
        func field(_ key: CodingKeys, _ value: some Encodable) -> Bool {
            guard let encoded = try? encoder.encode(value) else { return false }
            json += Array(#","\#(key.rawValue)":"#.utf8) + Array(encoded)
            return true
        }
        let encoded = (code.map { field(.code, $0) } ?? true)
            && (error.map { field(.error, $0) } ?? true)
            && (message.map { field(.message, $0) } ?? true)
            && (cards.map { field(.cards, $0) } ?? true)
        guard encoded else {
            return Array(#"{"ok":false,"code":"failed","error":"response could not be encoded"}"#.utf8) + [0x0A]
        }
        return json + Array("}\n".utf8)
    }

    public static func parse(_ line: some Collection<UInt8>) -> ControlResponse? {
        try? JSONDecoder().decode(ControlResponse.self, from: Data(line))
    }
}
