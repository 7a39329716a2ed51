internal import CUdev
import Glibc
import Logging
import SystemPackage

/// Every libudev object the monitor uses: the context, the netlink monitor and (briefly) the
/// enumerators.
///
/// libudev is thread-confined ("only a single specific thread may operate on a given object
/// during its entire lifetime"), so a session is created, used and destroyed on the monitor
/// thread only. It is deliberately not `Sendable` and never leaves `MonitorThread.run`.
final class UdevSession {
    /// Large enough that the uevents of a whole bus rescan fit while the agent is busy. The unit has
    /// no CAP_NET_ADMIN, so the kernel grants at most `net.core.rmem_max`, which the package's
    /// sysctl.d drop-in raises to exactly this.
    static let receiveBufferSize: CInt = 16 * 1024 * 1024

    private let udev: OpaquePointer
    private let monitor: OpaquePointer
    let monitorFD: CInt

    private init(udev: OpaquePointer, monitor: OpaquePointer) {
        self.udev = udev
        self.monitor = monitor
        self.monitorFD = udev_monitor_get_fd(monitor)
    }

    deinit {
        udev_monitor_unref(monitor)
        udev_unref(udev)
    }

    /// Subscribes to `udev` netlink events of subsystem `pci` (filtered in the kernel).
    static func open(logger: Logger) throws(UdevError) -> UdevSession {
        guard let udev = udev_new() else { throw UdevError(.context, errno: Errno(rawValue: errno)) }
        guard let monitor = udev_monitor_new_from_netlink(udev, "udev") else {
            let code = errno
            udev_unref(udev)
            throw UdevError(.monitor, errno: Errno(rawValue: code))
        }
        let session = UdevSession(udev: udev, monitor: monitor)

        var rc = udev_monitor_filter_add_match_subsystem_devtype(monitor, "pci", nil)
        guard rc >= 0 else { throw UdevError(.filter, errno: Errno(rawValue: -rc)) }

        rc = udev_monitor_set_receive_buffer_size(monitor, receiveBufferSize)
        if rc < 0 {
            // Not fatal: an overflow is detected (ENOBUFS) and every card re-read; but each is a full
            // re-read of the bus, so say what the buffer is and where the cap comes from.
            logger.warning("udev receive buffer kept at the kernel's cap; apply the package's sysctl.d drop-in (net.core.rmem_max)", metadata: [
                "wanted-bytes": "\(receiveBufferSize)", "granted-bytes": "\(session.grantedReceiveBuffer.map { "\($0)" } ?? "unknown")",
                "error": "\(Errno(rawValue: -rc))",
            ])
        }

        rc = udev_monitor_enable_receiving(monitor)
        guard rc >= 0 else { throw UdevError(.enableReceiving, errno: Errno(rawValue: -rc)) }
        return session
    }

    /// What the kernel granted (`SO_RCVBUF` reads back twice the usable size: the kernel's bookkeeping).
    private var grantedReceiveBuffer: Int? {
        var value: CInt = 0
        var length = socklen_t(MemoryLayout<CInt>.size)
        guard getsockopt(monitorFD, SOL_SOCKET, SO_RCVBUF, &value, &length) == 0 else { return nil }
        return Int(value) / 2
    }

    enum Received {
        case device(UdevDeviceRecord)
        /// Nothing left to read (`EAGAIN`).
        case drained
        case failed(Errno)
    }

    /// Reads one uevent without blocking.
    func receive() -> Received {
        while true {
            errno = 0
            guard let device = udev_monitor_receive_device(monitor) else {
                let code = errno
                switch code {
                case EINTR: continue
                case 0, EAGAIN, EWOULDBLOCK: return .drained
                default: return .failed(Errno(rawValue: code))
                }
            }
            defer { udev_device_unref(device) }
            return .device(Self.record(of: device))
        }
    }

    /// Calls `body` for every PCI device in sysfs, stopping early when it returns `false`.
    ///
    /// - Returns: `false` if `body` stopped the scan.
    func enumeratePCI(_ body: (UdevDeviceRecord) -> Bool) throws(UdevError) -> Bool {
        guard let enumerate = udev_enumerate_new(udev) else {
            throw UdevError(.enumerate, errno: Errno(rawValue: errno))
        }
        defer { udev_enumerate_unref(enumerate) }

        var rc = udev_enumerate_add_match_subsystem(enumerate, "pci")
        guard rc >= 0 else { throw UdevError(.enumerate, errno: Errno(rawValue: -rc)) }
        rc = udev_enumerate_scan_devices(enumerate)
        guard rc >= 0 else { throw UdevError(.enumerate, errno: Errno(rawValue: -rc)) }

        var entry = udev_enumerate_get_list_entry(enumerate)
        while let current = entry {
            entry = udev_list_entry_get_next(current)
            // The device may vanish between the scan and this read; its remove uevent follows.
            guard let syspath = udev_list_entry_get_name(current),
                  let device = udev_device_new_from_syspath(udev, syspath)
            else { continue }
            let record = Self.record(of: device)
            udev_device_unref(device)
            guard body(record) else { return false }
        }
        return true
    }

    private static func record(of device: OpaquePointer) -> UdevDeviceRecord {
        var record = UdevDeviceRecord()
        record.action = string(udev_device_get_action(device))
        record.syspath = string(udev_device_get_syspath(device))
        record.sysname = string(udev_device_get_sysname(device))
        record.driver = string(udev_device_get_driver(device))
        record.sequenceNumber = UInt64(udev_device_get_seqnum(device))
        for name in UdevDeviceRecord.propertyNames {
            if let value = string(udev_device_get_property_value(device, name)) {
                record.properties[name] = value
            }
        }
        // The uevent normally carries PCI_ID; fall back to sysfs while the device still exists.
        if record.properties["PCI_ID"] == nil, record.action != "remove" {
            record.sysfsVendor = string(udev_device_get_sysattr_value(device, "vendor"))
            record.sysfsDevice = string(udev_device_get_sysattr_value(device, "device"))
        }
        return record
    }

    private static func string(_ pointer: UnsafePointer<CChar>?) -> String? {
        pointer.map { String(cString: $0) }
    }
}
