/// Exit statuses, one per kind of outcome, from sysexits(3) so scripts and systemd can tell them apart.
public enum ExitStatus {
    public static let success: Int32 = 0
    /// `check`: the host is not ready.
    public static let notReady: Int32 = 1
    public static let usage: Int32 = 64
    /// The card is not on the bus (or cannot be told apart from another).
    public static let unavailable: Int32 = 69
    public static let software: Int32 = 70
    /// A sysfs step failed; the card was rolled back.
    public static let ioError: Int32 = 74
    /// A libvirt call failed or libvirt is unreachable.
    public static let tempFail: Int32 = 75
    /// Refused for safety: a device no card claims, an IOMMU-group peer in use, a bridge, a driver that cannot be read.
    public static let refused: Int32 = 77
    /// The configuration is invalid; systemd must not restart us into the same mistake.
    public static let config: Int32 = 78
}
