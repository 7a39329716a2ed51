import PassthroughCore
import PassthroughSysfs

/// Where the recovery procedure stands; in a ``RecoveryOutcome`` it says how far it got.
public struct RecoveryState: Hashable, Sendable, CustomStringConvertible {
    public enum Stage: String, Hashable, Sendable {
        case removing = "removing the functions"
        case resetting = "resetting the secondary bus"
        case waitingForLink = "waiting for the link"
        case rescanning = "rescanning"
    }

    public var stage: Stage
    /// The upstream port's Data Link Layer Link Active bit at the last look; `nil` before the
    /// first look or when the port does not report it.
    public var linkActive: Bool?
    public var rescans: Int
    /// The most recent failed step, kept so a timeout can say what kept going wrong.
    public var lastError: String?

    public init(stage: Stage = .removing, linkActive: Bool? = nil, rescans: Int = 0, lastError: String? = nil) {
        self.stage = stage
        self.linkActive = linkActive
        self.rescans = rescans
        self.lastError = lastError
    }

    public var description: String {
        var text = "\(stage.rawValue); link \(linkActive.map { $0 ? "up" : "down" } ?? "unknown"); \(rescans) rescan(s)"
        if let lastError { text += "; last error: \(lastError)" }
        return text
    }
}

/// A step that makes going on pointless: the card is left as it is and the caller told why.
public enum RecoveryFailure: Error, Hashable, Sendable, CustomStringConvertible {
    /// `remove` was refused: rescanning would only find the old, dead function objects.
    case removal(SysfsError)
    /// Secondary Bus Reset could not be pulsed on the upstream bridge.
    case reset(ConfigSpaceError)
    /// Going on would touch what is not the card's, or what a guest still holds.
    case refused(String)
    /// Secondary Bus Reset refused: it would reset `functions` too, which are below the port and not the card's.
    case busOccupied(port: PCIAddress, functions: [PCIAddress])
    /// What is below the upstream port (or in the slot) could not be read, so neither a Secondary Bus Reset
    /// could be ruled safe nor the card's return be told from someone else's function.
    case busUnreadable(SysfsError)

    public var description: String {
        switch self {
        case .removal(let error): "removing the card's functions failed: \(error)"
        case .reset(let error): "secondary bus reset failed: \(error)"
        case .refused(let why): why
        case .busOccupied(let port, let functions):
            "secondary bus reset refused: \(functions.map(\.description).joined(separator: ", ")) below \(port) "
                + "\(functions.count == 1 ? "is" : "are") not the card's and would be reset with it"
        case .busUnreadable(let error): "cannot tell what is on the card's bus: \(error)"
        }
    }
}

public enum RecoveryOutcome: Hashable, Sendable, CustomStringConvertible {
    /// The slot has functions again, as the kernel enumerated them (IDs may have changed, and
    /// functions may be missing: a new bitstream is a new device).
    case recovered([PCIDeviceSnapshot])
    case gaveUp(after: Duration, lastState: RecoveryState)
    case failed(RecoveryFailure, lastState: RecoveryState)
    /// The task was cancelled (agent shutting down); the card is left as it is.
    case cancelled(lastState: RecoveryState)

    public var description: String {
        switch self {
        case .recovered(let functions):
            "recovered: \(functions.map { "\($0.address) [\($0.id)]" }.joined(separator: ", "))"
        case .gaveUp(let after, let state):
            "gave up after \(after): \(state)"
        case .failed(let failure, let state):
            "failed: \(failure) (\(state))"
        case .cancelled(let state):
            "cancelled: \(state)"
        }
    }
}
