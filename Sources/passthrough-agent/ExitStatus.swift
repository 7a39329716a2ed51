// Stands alone: the whole table of exit statuses, the contract with scripts and systemd (README, *Exit
// statuses*), which every command of the CLI decides its status from.

/// Exit statuses, one per kind of outcome, from sysexits(3) so scripts and systemd can tell them apart.
enum ExitStatus {
    static let success: Int32 = 0
    /// `check`: the host is not ready.
    static let notReady: Int32 = 1
    /// Bad arguments, or a card name no card in the configuration has.
    static let usage: Int32 = 64
    /// The card is not on the bus (or cannot be told apart from another).
    static let unavailable: Int32 = 69
    /// An internal error, or an answer from the daemon that is not a response.
    static let software: Int32 = 70
    /// `run` could not start: an operating-system facility (the udev netlink socket, the libvirt
    /// library) failed. systemd restarts the unit.
    static let osError: Int32 = 71
    /// `run`: another agent holds the instance lock; this one touched nothing.
    static let alreadyRunning: Int32 = 73
    /// A sysfs step failed; the card was rolled back.
    static let ioError: Int32 = 74
    /// Libvirt is unreachable, or (`reflash`) no daemon answers on the control socket.
    static let tempFail: Int32 = 75
    /// `reflash`: the request was sent but no answer came (within `--timeout`, or the daemon closed
    /// the connection): its outcome is unknown, `status` tells.
    static let noAnswer: Int32 = 76
    /// Refused for safety (a device no card claims, an IOMMU-group peer in use, a guest holding the
    /// card, the card busy with another reflash, a bridge, a driver that cannot be read), or not allowed to (the control socket is root's).
    static let refused: Int32 = 77
    /// The configuration is invalid; systemd must not restart us into the same mistake.
    static let config: Int32 = 78
}
