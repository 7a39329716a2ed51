import SystemPackage

/// A failure to set up or run the udev monitor, with the `errno` behind it when there is one.
public struct UdevError: Error, Hashable, Sendable, CustomStringConvertible {
    /// Which step failed, by the message that names it. A struct rather than an enum (swift-system's shape), so a
    /// step can be added without breaking a caller's exhaustive switch.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let description: String
        private init(_ description: String) { self.description = description }

        /// ``UdevMonitor/start()`` was called after a successful start or after ``UdevMonitor/shutdown()``.
        public static let alreadyStarted = Code("the monitor was already started or shut down")
        public static let eventFD = Code("creating the shutdown eventfd failed")
        public static let threadStart = Code("starting the monitor thread failed")
        public static let context = Code("udev_new failed")
        public static let monitor = Code("udev_monitor_new_from_netlink failed")
        public static let filter = Code("udev_monitor_filter_add_match_subsystem_devtype failed")
        public static let enableReceiving = Code("udev_monitor_enable_receiving failed")
        public static let enumerate = Code("enumerating PCI devices failed")
        public static let poll = Code("poll failed")
        /// Receiving kept failing: `MonitorThread.maximumConsecutiveReceiveFailures` times in a row.
        public static let receive = Code("udev_monitor_receive_device kept failing")
        /// The monitor socket reported a hang-up.
        public static let socketClosed = Code("the udev netlink socket hung up")
    }

    public var code: Code
    /// The `errno` reported by the failing call, if any.
    public var errno: Errno?

    public init(_ code: Code, errno: Errno? = nil) {
        self.code = code
        self.errno = errno
    }

    public var description: String {
        if let errno { return "\(code): \(errno)" }
        return "\(code)"
    }
}
