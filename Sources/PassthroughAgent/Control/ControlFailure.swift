/// Why a request failed, as a stable word next to the human `error`, for scripts and for the exit
/// status of `passthrough-agent reflash` (see `ReflashCommand`).
///
/// A struct rather than an enum so that a client decodes a code it does not know yet (a newer
/// daemon) instead of failing to read the whole answer.
public struct ControlFailureCode: RawRepresentable, Codable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: String

    public init(rawValue: String) {
        self.rawValue = rawValue
    }

    /// No card of that name in the daemon's configuration.
    public static let unknownCard = ControlFailureCode(rawValue: "unknown-card")
    /// The card has not been seen on the bus.
    public static let notOnBus = ControlFailureCode(rawValue: "not-on-bus")
    /// Refused for safety; nothing was changed.
    public static let refused = ControlFailureCode(rawValue: "refused")
    /// A step failed (and was rolled back), or the card did not come back.
    public static let failed = ControlFailureCode(rawValue: "failed")
    /// The card (or the control socket) is busy with something else; nothing was changed.
    public static let busy = ControlFailureCode(rawValue: "busy")
    /// The request was not understood, too long, or never came (an idle connection).
    public static let badRequest = ControlFailureCode(rawValue: "bad-request")
    /// The peer is not root.
    public static let permissionDenied = ControlFailureCode(rawValue: "permission-denied")
    /// The daemon stopped before the request was done.
    public static let cancelled = ControlFailureCode(rawValue: "cancelled")

    public var description: String { rawValue }

    init(_ reason: CardSupervisor.ReflashRefused.Reason) {
        self = switch reason {
        case .unknownCard: .unknownCard
        case .notOnBus: .notOnBus
        case .unsafe: .refused
        case .failed: .failed
        case .busy: .busy
        }
    }
}

extension ControlResponse {
    /// What the control socket answers for a request that threw: the error's own words and the
    /// code a script goes by. Anything not known to be a refusal counts as a failed step.
    public static func failure(for error: any Error) -> ControlResponse {
        switch error {
        case let refused as CardSupervisor.ReflashRefused:
            failure(refused.description, code: ControlFailureCode(refused.reason))
        case is CancellationError:
            failure("cancelled: the agent is stopping", code: .cancelled)
        default:
            failure("\(error)", code: .failed)
        }
    }
}
