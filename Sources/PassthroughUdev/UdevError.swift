import SystemPackage

/// A failure to set up or run the udev monitor, with the `errno` behind it when there is one.
public struct UdevError: Error, Hashable, Sendable, CustomStringConvertible {
    /// Which step failed. A struct over a private enum so cases can be added without breaking users.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Step: String, Hashable, Sendable {
            case alreadyStarted = "the monitor was already started or shut down"
            case eventFD = "creating the shutdown eventfd failed"
            case threadStart = "starting the monitor thread failed"
            case context = "udev_new failed"
            case monitor = "udev_monitor_new_from_netlink failed"
            case filter = "udev_monitor_filter_add_match_subsystem_devtype failed"
            case enableReceiving = "udev_monitor_enable_receiving failed"
            case enumerate = "enumerating PCI devices failed"
            case poll = "poll failed"
            case receive = "udev_monitor_receive_device kept failing"
            case socketClosed = "the udev netlink socket hung up"
        }

        private let step: Step
        private init(_ step: Step) { self.step = step }

        /// ``UdevMonitor/start()`` was called after a successful start or after ``UdevMonitor/shutdown()``.
        public static let alreadyStarted = Code(.alreadyStarted)
        public static let eventFD = Code(.eventFD)
        public static let threadStart = Code(.threadStart)
        public static let context = Code(.context)
        public static let monitor = Code(.monitor)
        public static let filter = Code(.filter)
        public static let enableReceiving = Code(.enableReceiving)
        public static let enumerate = Code(.enumerate)
        public static let poll = Code(.poll)
        /// Receiving kept failing: `MonitorThread.maximumConsecutiveReceiveFailures` times in a row.
        public static let receive = Code(.receive)
        /// The monitor socket reported a hang-up.
        public static let socketClosed = Code(.socketClosed)

        public var description: String { step.rawValue }
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
