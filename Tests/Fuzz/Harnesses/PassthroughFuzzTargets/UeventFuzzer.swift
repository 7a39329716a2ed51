import PassthroughCore
import PassthroughUdev

/// `uevent`: decoding a uevent; each input is the kernel's wire form, `KEY=value` strings
/// separated by NUL bytes (`ACTION=change`, `DEVPATH=/devices/…`, `PCI_SLOT_NAME=…`, `DRIVER=…`).
///
/// The fields land in a ``UdevDeviceRecord`` as libudev hands them over (C strings, so no NUL inside a
/// value). Two keys are not the kernel's: `COLDPLUG=1` takes the enumeration path, `sysfs/vendor=` and
/// `sysfs/device=` stand for the attributes read when `PCI_ID` is missing. A decoded event must name
/// things the daemon can turn into sysfs paths: every name prints back to itself.
@_cdecl("passthrough_fuzz_uevent")
public func fuzzUevent(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    var record = UdevDeviceRecord()
    var isColdplug = false
    for field in UnsafeBufferPointer(start: data, count: size).split(separator: 0) {
        guard let equals = field.firstIndex(of: UInt8(ascii: "=")) else { continue }
        let key = String(decoding: field[..<equals], as: UTF8.self)
        let value = String(decoding: field[(equals + 1)...], as: UTF8.self)
        switch key {
        case "ACTION": record.action = value
        case "DEVPATH":
            record.syspath = "/sys" + value
            record.sysname = value.split(separator: "/").last.map(String.init)
        case "DRIVER": record.driver = value
        case "SEQNUM": record.sequenceNumber = UInt64(value) ?? 0
        case "COLDPLUG": isColdplug = value == "1"
        case "sysfs/vendor": record.sysfsVendor = value
        case "sysfs/device": record.sysfsDevice = value
        case _ where UdevDeviceRecord.propertyNames.contains(key): record.properties[key] = value
        default: break
        }
    }
    switch record.decode(isColdplug: isColdplug) {
    case .success(let event):
        if PCIAddress(event.address.description) != event.address {
            fatalError("address \(event.address) does not print back to itself")
        }
        if let id = event.id, PCIID(id.description) != id { fatalError("ID \(id) does not print back to itself") }
        if let driver = event.driver, DriverName(driver.rawValue) != driver || driver.rawValue.contains("/") {
            fatalError("driver \(driver) is not a driver directory name")
        }
    case .failure(let error):
        _ = error.description
    }
    return 0
}
