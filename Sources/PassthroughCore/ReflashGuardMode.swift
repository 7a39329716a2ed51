/// What `reflash-guard` protects the host with, on the card's upstream port: how a card that leaves the
/// link (an FPGA being programmed) is kept from taking the server down.
public enum ReflashGuardMode: String, Hashable, Sendable, CaseIterable, CustomStringConvertible {
    /// Nothing is changed on the port (`false`, or the key left out).
    case off
    /// Between `reflash --prepare` and `--finish`, and during a recovery: SERR# Enable and Fatal Error
    /// Reporting Enable cleared, so a Surprise Down is not escalated to a fatal system error (`true`).
    case mask
    /// Between `reflash --prepare` and `--finish`: the port's link disabled once the card's functions are
    /// removed. A link software disabled reports no Surprise Down at all, which firmware-first platforms
    /// escalate whatever the OS masks.
    case linkDisable = "link-disable"
    /// The mask, held for as long as the card is lent to its running guest (and around its reflashes), so
    /// a reprogramming nobody announced on the host never takes the server down.
    case whileLent = "while-lent"

    /// The modes that mask fatal-error reporting (the bits of ``mask``).
    public var masks: Bool { self == .mask || self == .whileLent }

    public var description: String { rawValue }
}
