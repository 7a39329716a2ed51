import PassthroughCore
import PassthroughSysfs
import Synchronization
import SystemPackage

/// The kernel's side of the PCI bus ABI over a ``FakeSysfs`` tree.
///
/// Reads go straight to the files. Writes to `driver_override`, a driver's `bind`/`unbind` and
/// `drivers_probe` change the `driver` links the way the kernel would, including its quirks:
/// `drivers_probe` succeeds when nothing binds, `bind` fails with `ENODEV` on a mismatch.
/// Faults can be injected per write or per driver probe.
///
/// For reflash: `config` files are read and written with `pread`/`pwrite`, and a slot whose
/// link is down (``dropLink(_:)``) reads all-ones and ignores writes, as a real surprise-down
/// device does. A function's `remove` takes it off the bus; a `rescan` (the bus's, or a
/// port's) runs the ``onRescan(_:)`` hooks, which model what the kernel finds on the link.
public final class EmulatedPCIBus: SysfsIO {
    public typealias RescanHook = @Sendable (FakeSysfs) -> Void

    private struct State {
        var idTables: [String: Set<PCIID>] = [:]
        var failingProbes: Set<String> = []
        var failingWrites: [FilePath: Errno] = [:]
        var failingReads: [FilePath: Errno] = [:]
        var writes: [(path: FilePath, value: String)] = []
        var configWrites: [(path: FilePath, offset: Int64, bytes: [UInt8])] = []
        var slotsWithoutLink: Set<PCISlot> = []
        var rescanHooks: [RescanHook] = []
        var writeHooks: [FilePath: RescanHook] = [:]
        var rescans = 0
        /// Per `config` file, BAR register offset → the bits a write can change and the read-only type bits.
        var barRegisters: [FilePath: [Int: (writable: UInt32, fixed: UInt32)]] = [:]
        /// Per `config` file, byte offset → bits that read zero whatever is written (not implemented).
        var hardWiredZero: [FilePath: [Int64: UInt8]] = [:]
    }

    public let sysfs: FakeSysfs
    private let real = LinuxSysfsIO()
    private let state = Mutex(State())

    public init(_ sysfs: FakeSysfs) {
        self.sysfs = sysfs
    }

    /// Loads a driver that claims `ids` by its ID table (as `xdma` claims `10ee:903f`).
    public func loadDriver(_ name: String, claiming ids: [String] = []) {
        sysfs.addDriver(name)
        state.withLock { $0.idTables[name] = Set(ids.compactMap(PCIID.init)) }
    }

    /// The driver's probe returns an error: `bind` fails, `drivers_probe` silently binds nothing.
    public func failProbes(of driver: String) {
        state.withLock { _ = $0.failingProbes.insert(driver) }
    }

    /// The next writes to `relativePath` fail with `errno`.
    public func failWrites(to relativePath: String, with errno: Errno) {
        state.withLock { $0.failingWrites[sysfs.root.appending(relativePath)] = errno }
    }

    /// Bits of one config-space byte that the device does not implement: writes to them are dropped, so they
    /// read zero (QEMU's root ports do that to Link Disable).
    public func hardWireToZero(_ address: String, byteOffset: Int, bits: UInt8) {
        let config = sysfs.root.appending("bus/pci/devices/\(address)/config")
        state.withLock { $0.hardWiredZero[config, default: [:]][Int64(byteOffset)] = bits }
    }

    /// Every write made through the bus, relative to the root, in order.
    public var writes: [(path: String, value: String)] {
        state.withLock { state in
            state.writes.map { (String($0.path.string.dropFirst(sysfs.root.string.count + 1)), $0.value) }
        }
    }

    /// The next reads of `relativePath` (string, bytes, directory listing, or stat) fail with `errno`.
    public func failReads(of relativePath: String, with errno: Errno) {
        state.withLock { $0.failingReads[sysfs.root.appending(relativePath)] = errno }
    }

    /// Every `pwrite` to a `config` file, relative to the root, in order.
    public var configWrites: [(path: String, offset: Int64, bytes: [UInt8])] {
        state.withLock { state in
            state.configWrites.map { (String($0.path.string.dropFirst(sysfs.root.string.count + 1)), $0.offset, $0.bytes) }
        }
    }

    /// How many rescans were written (bus-wide or per port).
    public var rescanCount: Int { state.withLock { $0.rescans } }

    /// The card in `slot` stops answering: its config reads return all-ones, writes vanish.
    public func dropLink(_ slot: String) {
        state.withLock { _ = $0.slotsWithoutLink.insert(PCISlot(slot)!) }
    }

    public func restoreLink(_ slot: String) {
        state.withLock { _ = $0.slotsWithoutLink.remove(PCISlot(slot)!) }
    }

    /// Runs on every rescan, after the write; it adds what the kernel would find.
    /// Runs once, just before the next write to `relativePath`: the world changing mid-step
    /// (a card dropping off the bus between our unbind and our probe).
    public func beforeWrite(to relativePath: String, _ hook: @escaping RescanHook) {
        state.withLock { $0.writeHooks[sysfs.root.appending(relativePath)] = hook }
    }

    public func onRescan(_ hook: @escaping RescanHook) {
        state.withLock { $0.rescanHooks.append(hook) }
    }

    /// Sets the Data Link Layer Link Active bit in a port's Link Status, as the hardware does
    /// when the link trains (or drops). The port's `config` must have a PCI Express capability.
    public func setLinkActive(_ port: String, _ active: Bool) {
        let address = PCIAddress(port)!
        let space = ConfigSpace(address: address, layout: sysfs.layout, io: real)
        let offset = try! space.expressCapability() + 0x12
        let status = try! space.linkStatus()
        let updated = active ? status | 0x2000 : status & ~0x2000
        try! real.writeBytes(space.path, offset: Int64(offset), [UInt8(updated & 0xFF), UInt8(updated >> 8)])
    }

    public func readBytes(_ path: FilePath, offset: Int64, count: Int) throws(SysfsError) -> [UInt8] {
        if let injected = state.withLock({ $0.failingReads[path] }) {
            throw SysfsError(operation: .read, path: path, errno: injected)
        }
        let bytes = try real.readBytes(path, offset: offset, count: count)
        if isWithoutLink(path) { return [UInt8](repeating: 0xFF, count: bytes.count) }
        return bytes
    }

    public func writeBytes(_ path: FilePath, offset: Int64, _ bytes: [UInt8]) throws(SysfsError) {
        let injected = state.withLock { state -> Errno? in
            state.configWrites.append((path, offset, bytes))
            return state.failingWrites[path]
        }
        if let injected { throw SysfsError(operation: .write, path: path, errno: injected) }
        // A write to a device that is not there is dropped by the link, not refused by the kernel.
        if isWithoutLink(path) { return }
        try real.writeBytes(path, offset: offset, bytes)
        try keepBARBits(path, written: offset..<offset + Int64(bytes.count))
        for (byte, bits) in state.withLock({ $0.hardWiredZero[path] ?? [:] }) where (offset..<offset + Int64(bytes.count)).contains(byte) {
            let value = try real.readBytes(path, offset: byte, count: 1)
            try real.writeBytes(path, offset: byte, [value[0] & ~bits])
        }
    }

    /// The device's BARs as config space sizes them: `registers` maps a register's offset to the bits a
    /// write can change (the address bits above the BAR's size) and its read-only type bits.
    func emulateBARRegisters(_ config: FilePath, _ registers: [Int: (writable: UInt32, fixed: UInt32)]) {
        state.withLock { $0.barRegisters[config] = registers }
    }

    /// What hardware does with a BAR write: only the address bits above the size stick.
    private func keepBARBits(_ path: FilePath, written range: Range<Int64>) throws(SysfsError) {
        guard let registers = state.withLock({ $0.barRegisters[path] }) else { return }
        for (offset, bits) in registers where range.overlaps(Int64(offset)..<Int64(offset + 4)) {
            let bytes = try real.readBytes(path, offset: Int64(offset), count: 4)
            let value = bytes.reversed().reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
            let kept = value & bits.writable | bits.fixed
            try real.writeBytes(path, offset: Int64(offset), (0..<4).map { UInt8(truncatingIfNeeded: kept >> (8 * $0)) })
        }
    }

    /// Whether `path` is a file of a function whose slot has no link.
    private func isWithoutLink(_ path: FilePath) -> Bool {
        let relative = String(path.string.dropFirst(sysfs.root.string.count + 1))
        let parts = relative.split(separator: "/")
        guard parts.count >= 4, parts[0...2] == ["bus", "pci", "devices"], let address = PCIAddress(String(parts[3])) else {
            return false
        }
        return state.withLock { $0.slotsWithoutLink.contains(address.slot) }
    }

    private func rescan() {
        let hooks = state.withLock { state in
            state.rescans += 1
            return state.rescanHooks
        }
        for hook in hooks { hook(sysfs) }
    }

    public func read(_ path: FilePath) throws(SysfsError) -> String {
        if let injected = state.withLock({ $0.failingReads[path] }) {
            throw SysfsError(operation: .read, path: path, errno: injected)
        }
        return try real.read(path)
    }
    public func readLink(_ path: FilePath) throws(SysfsError) -> FilePath? { try real.readLink(path) }
    public func list(_ directory: FilePath) throws(SysfsError) -> [String] {
        if let injected = state.withLock({ $0.failingReads[directory] }) {
            throw SysfsError(operation: .list, path: directory, errno: injected)
        }
        return try real.list(directory)
    }

    public func characterDevice(at path: FilePath) throws(SysfsError) -> DeviceNumber? {
        if let injected = state.withLock({ $0.failingReads[path] }) {
            throw SysfsError(operation: .stat, path: path, errno: injected)
        }
        return try real.characterDevice(at: path)
    }
    public func exists(_ path: FilePath) -> Bool { real.exists(path) }

    public func write(_ value: String, to path: FilePath) throws(SysfsError) {
        let (injected, hook) = state.withLock { state -> (Errno?, RescanHook?) in
            state.writes.append((path, value))
            return (state.failingWrites[path], state.writeHooks.removeValue(forKey: path))
        }
        hook?(sysfs)
        if let injected { throw SysfsError(operation: .write, path: path, errno: injected, value: value) }
        guard real.exists(path) else {
            throw SysfsError(operation: .write, path: path, errno: .noSuchFileOrDirectory, value: value)
        }
        let relative = String(path.string.dropFirst(sysfs.root.string.count + 1))
        let parts = relative.split(separator: "/").map(String.init)
        let argument = value.trimmingNewline()
        let fail = { (errno: Errno) in SysfsError(operation: .write, path: path, errno: errno, value: value) }

        if relative == "bus/pci/drivers_probe" {
            // The kernel looks the name up on the bus first: a device that is gone is ENODEV.
            guard PCIAddress(argument) != nil, sysfs.exists("bus/pci/devices/\(argument)") else {
                throw fail(.operationNotSupportedByDevice)
            }
            guard sysfs.driver(of: argument) == nil else { return }
            if let driver = matchingDriver(for: argument), !isFailingProbe(driver) {
                sysfs.bind(argument, to: driver)
            }
            return
        }
        if relative == "bus/pci/rescan" {
            rescan()
            return
        }
        if parts.count == 5, parts[0...2] == ["bus", "pci", "devices"] {
            switch parts[4] {
            case "remove":
                sysfs.removeFunction(parts[3])
                return
            case "rescan", "dev_rescan":
                rescan()
                return
            default:
                break
            }
        }
        if parts.count == 5, parts[0...2] == ["bus", "pci", "drivers"] {
            let driver = parts[3]
            switch parts[4] {
            case "unbind":
                guard sysfs.driver(of: argument) == driver else { throw fail(.operationNotSupportedByDevice) }
                sysfs.unbind(argument)
                return
            case "bind":
                guard PCIAddress(argument) != nil, real.exists(sysfs.root.appending("bus/pci/devices/\(argument)")) else {
                    throw fail(.operationNotSupportedByDevice)
                }
                guard sysfs.driver(of: argument) == nil else { throw fail(.resourceBusy) }
                guard canBind(argument, to: driver) else { throw fail(.operationNotSupportedByDevice) }
                guard !isFailingProbe(driver) else { throw fail(.ioError) }
                sysfs.bind(argument, to: driver)
                return
            default:
                break
            }
        }
        if parts.last == "driver_override" {
            // The kernel keeps "(null)" for an empty write.
            sysfs.writeFile(relative, argument.isEmpty ? "(null)\n" : "\(argument)\n")
            return
        }
        // A sysfs attribute holds the last value stored, never a tail of an older one.
        sysfs.writeFile(relative, value)
    }

    // MARK: Kernel matching

    private func overrideOf(_ address: String) -> String? {
        let text = sysfs.driverOverride(of: address).trimmingNewline()
        return text == "(null)" || text.isEmpty ? nil : text
    }

    private func id(of address: String) -> PCIID? {
        guard let vendor = try? real.read(sysfs.root.appending("bus/pci/devices/\(address)/vendor")),
              let device = try? real.read(sysfs.root.appending("bus/pci/devices/\(address)/device"))
        else { return nil }
        return PCIID(sysfsVendor: vendor, sysfsDevice: device)
    }

    /// `driver_override` wins outright; otherwise the first loaded driver whose table has the ID.
    private func matchingDriver(for address: String) -> String? {
        if let override = overrideOf(address) {
            return real.exists(sysfs.root.appending("bus/pci/drivers/\(override)")) ? override : nil
        }
        guard let id = id(of: address) else { return nil }
        return state.withLock { state in
            state.idTables.keys.sorted().first { state.idTables[$0]?.contains(id) == true }
        }
    }

    private func canBind(_ address: String, to driver: String) -> Bool {
        if let override = overrideOf(address) { return override == driver }
        guard let id = id(of: address) else { return false }
        return state.withLock { $0.idTables[driver]?.contains(id) == true }
    }

    private func isFailingProbe(_ driver: String) -> Bool {
        state.withLock { $0.failingProbes.contains(driver) }
    }
}

extension String {
    func trimmingNewline() -> String {
        var text = Substring(self)
        while text.last == "\n" { text = text.dropLast() }
        return String(text)
    }
}
