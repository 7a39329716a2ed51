#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import PassthroughCore

/// One request on the control socket: a JSON object on one line, e.g.
/// `{"command":"reflash-prepare","card":"u200"}`.
public enum ControlRequest: Hashable, Sendable, CustomStringConvertible {
    /// Every card, or one.
    case status(card: CardName?)
    /// The operator is about to reflash `card`: detach it, engage the guard.
    case reflashPrepare(card: CardName)
    /// The reflash is done: recover the card, release the guard, give it back.
    case reflashFinish(card: CardName)

    public enum Command: String, Hashable, Sendable, CaseIterable {
        case status
        case reflashPrepare = "reflash-prepare"
        case reflashFinish = "reflash-finish"
    }

    public var command: Command {
        switch self {
        case .status: .status
        case .reflashPrepare: .reflashPrepare
        case .reflashFinish: .reflashFinish
        }
    }

    public var card: CardName? {
        switch self {
        case .status(let card): card
        case .reflashPrepare(let card), .reflashFinish(let card): card
        }
    }

    public var description: String {
        card.map { "\(command.rawValue) \($0)" } ?? command.rawValue
    }

    private struct Wire: Codable {
        var command: String?
        var card: String?
    }

    /// Parses one line (without its newline).
    public static func parse(_ line: some Collection<UInt8>) -> Result<ControlRequest, ControlRequestError> {
        let wire: Wire
        do {
            wire = try JSONDecoder().decode(Wire.self, from: Data(line))
        } catch {
            return .failure(.malformed)
        }
        guard let commandText = wire.command else { return .failure(.missingCommand) }
        guard let command = Command(rawValue: commandText) else { return .failure(.unknownCommand(commandText)) }
        var card: CardName?
        if let text = wire.card {
            guard let name = CardName(text) else { return .failure(.invalidCard(text)) }
            card = name
        }
        switch command {
        case .status:
            return .success(.status(card: card))
        case .reflashPrepare, .reflashFinish:
            guard let card else { return .failure(.missingCard(command)) }
            return .success(command == .reflashPrepare ? .reflashPrepare(card: card) : .reflashFinish(card: card))
        }
    }

    /// The request as the client sends it: compact JSON and a newline.
    public var line: [UInt8] {
        let wire = Wire(command: command.rawValue, card: card?.rawValue)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // Two optional strings cannot fail to encode.
        let data = (try? encoder.encode(wire)) ?? Data()
        return Array(data) + [0x0A]
    }
}

/// Why a request line was not understood; sent back as the response's `error`.
public enum ControlRequestError: Error, Hashable, Sendable, CustomStringConvertible {
    case malformed
    case missingCommand
    case unknownCommand(String)
    case missingCard(ControlRequest.Command)
    case invalidCard(String)
    case tooLong(limit: Int)

    public var description: String {
        switch self {
        case .malformed:
            "malformed request: expected one JSON object per line"
        case .missingCommand:
            "missing \"command\""
        case .unknownCommand(let command):
            "unknown command \"\(command.prefix(64))\" (expected one of: \(ControlRequest.Command.allCases.map(\.rawValue).joined(separator: ", ")))"
        case .missingCard(let command):
            "\"\(command.rawValue)\" needs a \"card\""
        case .invalidCard(let text):
            "invalid card name \"\(text.prefix(64))\""
        case .tooLong(let limit):
            "request longer than \(limit) bytes"
        }
    }
}
