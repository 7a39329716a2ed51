/// Where the monitor thread gets devices from: ``UdevSession`` in production, a scripted fake in
/// tests. Used on the monitor thread only.
protocol MonitorSource: AnyObject {
    /// Readable when ``receive()`` has something to say.
    var monitorFD: CInt { get }
    /// Reads one uevent without blocking.
    func receive() -> UdevSession.Received
    /// Calls `body` for every PCI device, stopping early when it returns `false`.
    /// - Returns: `false` if `body` stopped the scan.
    func enumeratePCI(_ body: (UdevDeviceRecord) -> Bool) throws(UdevError) -> Bool
}

extension UdevSession: MonitorSource {}
