// From libudev's raw strings to a UdevEvent: the record, its decoding, and the error that says why a device did not decode.

import PassthroughCore

/// The raw strings read from one `udev_device`, before any interpretation.
///
/// Kept free of C types so decoding is a pure function that tests (and the uevent fuzzer, hence
/// `package`) can drive with dictionaries.
package struct UdevDeviceRecord: Sendable {
    /// `ACTION`; `nil` for devices from enumeration (and for broken uevents).
    package var action: String?
    package var syspath: String?
    package var sysname: String?
    package var driver: String?
    /// `SEQNUM`; 0 when absent.
    package var sequenceNumber: UInt64 = 0
    /// Only the properties ``decode(isColdplug:)`` looks at (see ``UdevDeviceRecord/propertyNames``).
    package var properties: [String: String] = [:]
    /// The `vendor` and `device` sysfs attributes, read only when `PCI_ID` is missing.
    package var sysfsVendor: String?
    package var sysfsDevice: String?

    package static let propertyNames = ["PCI_SLOT_NAME", "PCI_ID", "ERROR_EVENT", "DEVICE_ONLINE"]

    package init(
        action: String? = nil, syspath: String? = nil, sysname: String? = nil, driver: String? = nil,
        sequenceNumber: UInt64 = 0, properties: [String: String] = [:], sysfsVendor: String? = nil, sysfsDevice: String? = nil
    ) {
        self.action = action
        self.syspath = syspath
        self.sysname = sysname
        self.driver = driver
        self.sequenceNumber = sequenceNumber
        self.properties = properties
        self.sysfsVendor = sysfsVendor
        self.sysfsDevice = sysfsDevice
    }

    /// Decodes the record; coldplug records get action `add` whatever they carry.
    package func decode(isColdplug: Bool) -> Result<UdevEvent, UdevParseError> {
        func failure(_ field: String, _ value: String?) -> Result<UdevEvent, UdevParseError> {
            .failure(UdevParseError(syspath: syspath, field: field, value: value))
        }

        guard let syspath, !syspath.isEmpty else { return failure("SYSPATH", nil) }

        let action: UdevAction
        if isColdplug {
            action = .add
        } else if let raw = self.action, !raw.isEmpty {
            action = UdevAction(raw)
        } else {
            return failure("ACTION", nil)
        }

        let address: PCIAddress
        if let slotName = nonEmpty(properties["PCI_SLOT_NAME"]) {
            guard let parsed = PCIAddress(slotName) else { return failure("PCI_SLOT_NAME", slotName) }
            address = parsed
        } else if let sysname = nonEmpty(sysname) {
            guard let parsed = PCIAddress(sysname) else { return failure("PCI_SLOT_NAME", sysname) }
            address = parsed
        } else {
            return failure("PCI_SLOT_NAME", nil)
        }

        var id: PCIID?
        if let rawID = nonEmpty(properties["PCI_ID"]) {
            guard let parsed = PCIID(rawID) else { return failure("PCI_ID", rawID) }
            id = parsed
        } else if let vendor = sysfsVendor, let device = sysfsDevice {
            id = PCIID(sysfsVendor: vendor, sysfsDevice: device)
            if id == nil { return failure("PCI_ID", "\(vendor)/\(device)") }
        }

        var driver: DriverName?
        if action != .remove, action != .unbind, let rawDriver = nonEmpty(self.driver) {
            guard let parsed = DriverName(rawDriver) else { return failure("DRIVER", rawDriver) }
            driver = parsed
        }

        var deviceOnline: Bool?
        switch nonEmpty(properties["DEVICE_ONLINE"]) {
        case nil: deviceOnline = nil
        case "0": deviceOnline = false
        case "1": deviceOnline = true
        case let other: return failure("DEVICE_ONLINE", other)
        }

        return .success(UdevEvent(
            action: action,
            isColdplug: isColdplug,
            syspath: syspath,
            address: address,
            id: id,
            driver: driver,
            errorEvent: nonEmpty(properties["ERROR_EVENT"]).map(AERErrorEvent.init),
            deviceOnline: deviceOnline,
            sequenceNumber: sequenceNumber == 0 ? nil : sequenceNumber
        ))
    }

    private func nonEmpty(_ value: String?) -> String? {
        guard let value, !value.isEmpty else { return nil }
        return value
    }
}

/// Why a device seen by libudev could not become a ``UdevEvent``.
public struct UdevParseError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The device's syspath, if it had one.
    public var syspath: String?
    /// The property or field at fault: `ACTION`, `SYSPATH`, `PCI_SLOT_NAME`, `PCI_ID`, `DRIVER`, `DEVICE_ONLINE`.
    public var field: String
    /// The offending value; `nil` when the field was missing.
    public var value: String?

    public init(syspath: String?, field: String, value: String?) {
        self.syspath = syspath
        self.field = field
        self.value = value
    }

    public var description: String {
        let subject = syspath ?? "device without syspath"
        if let value {
            return "\(subject): invalid \(field) '\(value)'"
        }
        return "\(subject): missing \(field)"
    }
}
