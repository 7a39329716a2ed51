/// Metadata keys the agent logs under; each becomes a journal field of the same name, so
/// `journalctl PASSTHROUGH_CARD=fpga0` finds everything about one card, and the catalog
/// (`systemd/passthrough-agent.catalog`) can quote them as `@PCI_SLOT@`.
public enum LogMetadataKey {
    /// The card's name from the configuration.
    public static let card = "PASSTHROUGH_CARD"
    /// PCI address, `0000:01:00.0`.
    public static let pciSlot = "PCI_SLOT"
    /// Vendor and device, `10ee:903f`.
    public static let pciID = "PCI_ID"
    /// libvirt domain name.
    public static let guest = "GUEST"
    /// Kernel driver before a rebind (empty when unbound).
    public static let driverFrom = "DRIVER_FROM"
    /// Kernel driver after a rebind.
    public static let driverTo = "DRIVER_TO"
    /// How long an operation took, in microseconds (journal convention for times: `_USEC`).
    public static let durationMicroseconds = "DURATION_USEC"
    /// The operation that failed or is retried (`unbind`, `attach`, …).
    public static let step = "STEP"
    /// 1-based attempt number of a retried step.
    public static let attempt = "ATTEMPT"
    /// The configuration file concerned.
    public static let configPath = "CONFIG_PATH"
    /// The journal's standard field for a numeric errno.
    public static let errno = "ERRNO"
    /// Links an entry to its catalog text; see ``NotificationKind``.
    public static let messageID = "MESSAGE_ID"
}
