/// What a function's `driver` link says about who holds it.
///
/// A name the agent cannot read is neither "no driver" nor a driver it knows: something holds the
/// function and nobody can say what. Unknown is hands off, so it is a case of its own that every
/// decision has to face, never folded into `unbound`.
public enum BoundDriver: Hashable, Sendable, CustomStringConvertible {
    /// No driver is bound.
    case unbound
    case bound(DriverName)
    /// The link names something that is not a driver name (as the kernel wrote it, or as far as it could be read).
    case unreadable(String)

    public init(_ name: DriverName?) {
        self = name.map(Self.bound) ?? .unbound
    }

    public static let vfioPCI = BoundDriver.bound(.vfioPCI)

    /// The driver's name, when it is one; `nil` both for "no driver" and for one that cannot be read.
    public var name: DriverName? {
        if case .bound(let name) = self { return name }
        return nil
    }

    public var isUnreadable: Bool {
        if case .unreadable = self { return true }
        return false
    }

    public var description: String {
        switch self {
        case .unbound: "no driver"
        case .bound(let name): name.rawValue
        case .unreadable(let text): "an unreadable driver (\"\(text.prefix(80).escapedForMessages)\")"
        }
    }
}

extension StringProtocol {
    /// Control, format (bidi overrides, zero-width) and separator characters shown as `\u{…}`, so a
    /// hostile name can neither forge log lines nor reorder what a terminal shows.
    var escapedForMessages: String {
        unicodeScalars.map { scalar in
            switch scalar.properties.generalCategory {
            case .control, .format, .lineSeparator, .paragraphSeparator: "\\u{\(String(scalar.value, radix: 16))}"
            default: String(scalar)
            }
        }.joined()
    }
}
