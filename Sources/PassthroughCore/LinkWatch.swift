/// How often the agent reads a card's vendor ID to notice that it dropped off the link.
public enum LinkWatch: Hashable, Sendable, CustomStringConvertible {
    case off
    case every(Duration)

    /// Shorter intervals would poll config space faster than any human reflash needs.
    public static let minimumInterval = Duration.milliseconds(100)
    public static let maximumInterval = Duration.seconds(3600)

    public var interval: Duration? {
        if case .every(let interval) = self { return interval }
        return nil
    }

    public var description: String {
        switch self {
        case .off: "off"
        case .every(let interval): "every \(ConfigDuration.format(interval))"
        }
    }
}
