/// A PCIe link's speed and width, as the kernel prints them in `current_link_speed` / `current_link_width`
/// (or the `max_link_*` pair for what an end can do).
public struct PCILinkState: Hashable, Sendable, CustomStringConvertible {
    /// Gigatransfers per second: 2.5 (Gen1), 5, 8, 16, 32, 64.
    public var speed: Double
    /// Lanes.
    public var width: Int

    public init(speed: Double, width: Int) {
        self.speed = speed
        self.width = width
    }

    /// Parses the kernel's `8.0 GT/s PCIe` (older kernels: `8 GT/s`) and `16`; `nil` for `Unknown`,
    /// a width of 0 (no link) or anything else.
    public init?(speed speedText: String, width widthText: String) {
        let speedWord = speedText.split(separator: " ").first.map(String.init) ?? ""
        guard let speed = Double(speedWord), speed > 0,
              let width = Int(widthText.split(whereSeparator: { $0 == "\n" || $0 == " " }).first.map(String.init) ?? ""), width > 0
        else { return nil }
        self.init(speed: speed, width: width)
    }

    /// `8 GT/s x16`
    public var description: String {
        let speedText = speed == speed.rounded() ? String(Int(speed)) : String(speed)
        return "\(speedText) GT/s x\(width)"
    }

    /// The link both ends can train to: the lesser speed and width of the two.
    public func limited(by other: PCILinkState) -> PCILinkState {
        PCILinkState(speed: min(speed, other.speed), width: min(width, other.width))
    }

    /// Slower or narrower than `other`.
    public func isWorse(than other: PCILinkState) -> Bool {
        speed < other.speed || width < other.width
    }
}

/// How a card's link came back after a re-enumeration (reflash, hot-add, recovery).
public enum LinkVerdict: Hashable, Sendable, CustomStringConvertible {
    case healthy(PCILinkState)
    /// Trained, but worse than before (or than both ends can do), or not answering at all.
    case degraded(String)
    /// The kernel does not say (no PCIe link attributes, `Unknown`): nothing to judge.
    case unknown

    public var description: String {
        switch self {
        case .healthy(let link): "\(link)"
        case .degraded(let why): "degraded: \(why)"
        case .unknown: "unknown"
        }
    }
}

public enum LinkHealth {
    /// Judges the link of a card that has just (re)appeared.
    ///
    /// - Parameters:
    ///   - now: what the link trained to; `nil` when the kernel does not say.
    ///   - before: the link when the card was last healthy, if it was ever seen so.
    ///   - capable: what the card and its port can both do (the lesser of their `max_link_*`).
    ///   - answers: whether the card's config space answers; all-ones after a "successful" training
    ///     means the card is not really there.
    public static func judge(now: PCILinkState?, before: PCILinkState?, capable: PCILinkState?, answers: Bool) -> LinkVerdict {
        guard answers else {
            return .degraded("its config space reads all-ones although the link trained")
        }
        guard let now else { return .unknown }
        if let before, now.isWorse(than: before) {
            return .degraded("\(before) before, \(now) now")
        }
        if let capable, now.isWorse(than: capable) {
            return .degraded("\(now), below the \(capable) the card and its port can do")
        }
        return .healthy(now)
    }
}
