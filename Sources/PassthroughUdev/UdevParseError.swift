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
