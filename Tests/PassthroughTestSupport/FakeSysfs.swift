#if canImport(Glibc)
import Glibc
#endif
import PassthroughCore
import PassthroughSysfs
import SystemPackage

/// A temp-dir sysfs laid out like the kernel's: `bus/pci/devices` links into `devices/pci0000:00`,
/// `driver` and `iommu_group` links, `driver_override`, and the driver `bind`/`unbind` files.
///
/// The files only hold what was written; ``EmulatedPCIBus`` makes them react as the kernel does.
public final class FakeSysfs: Sendable {
    public let root: FilePath

    public init() {
        var template = Array("/tmp/passthrough-sysfs-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        precondition(made != nil, "mkdtemp failed")
        root = FilePath(String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        for directory in ["bus/pci/devices", "bus/pci/drivers", "devices/pci0000:00", "kernel/iommu_groups", "module"] {
            Self.makeDirectories(root.appending(directory))
        }
        writeFile("bus/pci/drivers_probe", "")
        writeFile("bus/pci/rescan", "")
    }

    deinit {
        Self.removeTree(root)
    }

    public var layout: SysfsLayout { SysfsLayout(root: root) }

    /// A loaded PCI driver.
    public func addDriver(_ name: String) {
        Self.makeDirectories(root.appending("bus/pci/drivers/\(name)"))
        for file in ["bind", "unbind", "new_id", "remove_id"] {
            writeFile("bus/pci/drivers/\(name)/\(file)", "")
        }
    }

    /// A PCI function, optionally below a bridge that must already exist, bound to `driver`.
    public func addFunction(
        _ address: String, id: String, classCode: UInt32 = 0x058000, driver: String? = nil,
        iommuGroup: Int? = nil, below parent: String? = nil, subsystem: String? = "10ee:0007",
        config: [UInt8]? = nil
    ) {
        let relativeDevice = devicePath(address, below: parent)
        Self.makeDirectories(root.appending(relativeDevice))
        let pciID = PCIID(id)!
        writeFile("\(relativeDevice)/vendor", "0x\(hex(pciID.vendor))\n")
        writeFile("\(relativeDevice)/device", "0x\(hex(pciID.device))\n")
        writeFile("\(relativeDevice)/class", "0x\(String(classCode, radix: 16).leftPadded(6))\n")
        writeFile("\(relativeDevice)/driver_override", "(null)\n")
        if let subsystem, let subsystemID = PCIID(subsystem) {
            writeFile("\(relativeDevice)/subsystem_vendor", "0x\(hex(subsystemID.vendor))\n")
            writeFile("\(relativeDevice)/subsystem_device", "0x\(hex(subsystemID.device))\n")
        }
        // Every PCI device has these two; EmulatedPCIBus reacts to writes to them.
        writeFile("\(relativeDevice)/remove", "")
        writeFile("\(relativeDevice)/rescan", "")
        if let config { writeBytes("\(relativeDevice)/config", config) }
        symlink("../../../\(relativeDevice)", at: "bus/pci/devices/\(address)")
        if let driver { bind(address, to: driver) }
        if let iommuGroup {
            Self.makeDirectories(root.appending("kernel/iommu_groups/\(iommuGroup)/devices"))
            symlink("\(upToRoot(relativeDevice))kernel/iommu_groups/\(iommuGroup)", at: "\(relativeDevice)/iommu_group")
            symlink("../../../../\(relativeDevice)", at: "kernel/iommu_groups/\(iommuGroup)/devices/\(address)")
        }
    }

    /// What the kernel does when a device leaves the bus (hot-unplug or `remove`).
    public func removeFunction(_ address: String) {
        guard let target = try? LinuxSysfsIO().readLink(root.appending("bus/pci/devices/\(address)")) else { return }
        var device = root.appending("bus/pci/devices")
        device.append(target.components)
        if let group = try? LinuxSysfsIO().readLink(device.appending("iommu_group")), let name = group.lastComponent {
            unlink(root.appending("kernel/iommu_groups/\(name)/devices/\(address)"))
        }
        if let driver = try? LinuxSysfsIO().readLink(device.appending("driver")), let name = driver.lastComponent {
            unlink(root.appending("bus/pci/drivers/\(name)/\(address)"))
        }
        Self.removeTree(device.lexicallyNormalized())
        unlink(root.appending("bus/pci/devices/\(address)"))
    }

    /// The `driver` link and the driver's back-link, as a successful probe leaves them.
    public func bind(_ address: String, to driver: String) {
        let relativeDevice = resolvedDevicePath(address)
        symlink("\(upToRoot(relativeDevice))bus/pci/drivers/\(driver)", at: "\(relativeDevice)/driver")
        symlink("../../../../\(relativeDevice)", at: "bus/pci/drivers/\(driver)/\(address)")
    }

    public func unbind(_ address: String) {
        let relativeDevice = resolvedDevicePath(address)
        if let driver = try? LinuxSysfsIO().readLink(root.appending("\(relativeDevice)/driver")), let name = driver.lastComponent {
            unlink(root.appending("bus/pci/drivers/\(name)/\(address)"))
        }
        unlink(root.appending("\(relativeDevice)/driver"))
    }

    public func driver(of address: String) -> String? {
        (try? LinuxSysfsIO().readLink(root.appending("bus/pci/devices/\(address)/driver")))?.lastComponent?.string ?? nil
    }

    public func driverOverride(of address: String) -> String {
        (try? LinuxSysfsIO().read(root.appending("bus/pci/devices/\(address)/driver_override"))) ?? ""
    }

    public func writeFile(_ relativePath: String, _ contents: String) {
        let path = root.appending(relativePath)
        let fd = try! FileDescriptor.open(path, .writeOnly, options: [.create, .truncate], permissions: [.ownerReadWrite, .groupRead, .otherRead])
        _ = try! fd.closeAfter { try fd.writeAll(Array(contents.utf8)) }
    }

    /// A binary file such as `config`, replacing what was there.
    public func writeBytes(_ relativePath: String, _ bytes: [UInt8]) {
        let path = root.appending(relativePath)
        let fd = try! FileDescriptor.open(path, .writeOnly, options: [.create, .truncate], permissions: [.ownerReadWrite, .groupRead, .otherRead])
        _ = try! fd.closeAfter { try fd.writeAll(bytes) }
    }

    /// The whole `config` file of a function on the bus (to compare before and after).
    public func configBytes(of address: String) -> [UInt8] {
        let path = root.appending("bus/pci/devices/\(address)/config")
        return (try? LinuxSysfsIO().readBytes(path, offset: 0, count: 65536)) ?? []
    }

    /// Removes a file, for example a device's `rescan` to model an older kernel.
    public func removeFile(_ relativePath: String) {
        unlink(root.appending(relativePath))
    }

    public func exists(_ relativePath: String) -> Bool {
        LinuxSysfsIO().exists(root.appending(relativePath))
    }

    public func writeFileCreatingDirectories(_ relativePath: String, _ contents: String) {
        var directory = root.appending(relativePath)
        directory.removeLastComponent()
        Self.makeDirectories(directory)
        writeFile(relativePath, contents)
    }

    // MARK: Processes and VFIO devices

    /// A process in the fake `/proc` (`proc/<pid>` in the tree): its `comm`, and fd links 0, 1, … to
    /// `openFiles`, real paths, so that `stat` through a link finds a real device number as through the kernel's.
    public func addProcess(_ pid: Int, command: String, openFiles: [String]) {
        Self.makeDirectories(root.appending("proc/\(pid)/fd"))
        writeFile("proc/\(pid)/comm", "\(command)\n")
        for (fd, target) in openFiles.enumerated() {
            symlink(target, at: "proc/\(pid)/fd/\(fd)")
        }
    }

    /// A VFIO group's character device as `vfio_create_group` registers it: `class/vfio/<name>/dev`, `MAJ:MIN`.
    public func addVFIOGroup(_ name: String, device: String) {
        writeFileCreatingDirectories("class/vfio/\(name)/dev", "\(device)\n")
    }

    // MARK: Paths

    private func devicePath(_ address: String, below parent: String?) -> String {
        guard let parent else { return "devices/pci0000:00/\(address)" }
        return "\(resolvedDevicePath(parent))/\(address)"
    }

    /// `devices/pci0000:00/…/<address>` for a function already on the bus.
    func resolvedDevicePath(_ address: String) -> String {
        let target = try! LinuxSysfsIO().readLink(root.appending("bus/pci/devices/\(address)"))!
        return target.components.drop { $0 == ".." }.map(\.string).joined(separator: "/")
    }

    private func upToRoot(_ relativeDevice: String) -> String {
        String(repeating: "../", count: relativeDevice.split(separator: "/").count)
    }

    private func hex(_ value: UInt16) -> String { String(value, radix: 16).leftPadded(4) }

    private func symlink(_ target: String, at relativePath: String) {
        let path = root.appending(relativePath)
        unlink(path)
        _ = target.withCString { t in path.withPlatformString { Glibc.symlink(t, $0) } }
    }

    private func unlink(_ path: FilePath) {
        _ = path.withPlatformString { Glibc.unlink($0) }
    }

    private static func makeDirectories(_ path: FilePath) {
        var current = FilePath("/")
        for component in path.components {
            current.append(component)
            _ = current.withPlatformString { mkdir($0, 0o755) }
        }
    }

    private static func removeTree(_ path: FilePath) {
        guard let entries = try? LinuxSysfsIO().list(path) else {
            _ = path.withPlatformString { Glibc.unlink($0) }
            return
        }
        for entry in entries {
            let child = path.appending(entry)
            var info = stat()
            if child.withPlatformString({ lstat($0, &info) }) == 0, info.st_mode & S_IFMT == S_IFDIR {
                removeTree(child)
            } else {
                _ = child.withPlatformString { Glibc.unlink($0) }
            }
        }
        _ = path.withPlatformString { rmdir($0) }
    }
}

extension String {
    func leftPadded(_ width: Int) -> String {
        String(repeating: "0", count: max(0, width - count)) + self
    }
}
